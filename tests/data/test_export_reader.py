"""Reading exports: the real sample, gzip, stdin, and clear errors for bad lines."""

from __future__ import annotations

import gzip
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from oasst.data import (
    ExportMessageNode,
    ExportMessageTree,
    OasstDataError,
    count_messages,
    open_jsonl,
    read_message_trees,
    read_messages,
    read_oasst_jsonl,
    read_oasst_obj,
)

NodeDict = Callable[..., dict[str, Any]]
SAMPLE_TREES = 551
SAMPLE_MESSAGES = 1552


def _lines(*objs: Any) -> bytes:
    return "".join(json.dumps(obj) + "\n" for obj in objs).encode()


def test_sample_has_551_trees_and_1552_messages(sample_path: Path) -> None:
    trees = list(read_message_trees(sample_path))
    assert len(trees) == SAMPLE_TREES
    assert sum(count_messages(tree) for tree in trees) == SAMPLE_MESSAGES
    assert sum(1 for _ in read_messages(sample_path)) == SAMPLE_MESSAGES
    assert {tree.tree_state for tree in trees} >= {"ready_for_export", "growing", "halted_by_moderator"}


def test_sample_keeps_unknown_fields(sample_path: Path) -> None:
    tree = next(iter(read_message_trees(sample_path)))
    assert tree.prompt is not None and tree.prompt.model_extra is not None
    assert "CRITERIA" in tree.prompt.model_extra
    assert tree.prompt.detoxify is not None and tree.prompt.detoxify.toxicity >= 0


def test_read_messages_gives_flat_rows_depth_first(make_tree: Callable[..., ExportMessageTree]) -> None:
    tree = make_tree("t", tree_state="growing")
    data = _lines(tree.model_dump(mode="json"))
    rows = list(read_messages(io.BytesIO(data)))
    assert [row.message_id for row in rows] == ["t-r", "t-a1", "t-p1", "t-a2", "t-a3", "t-a4"]
    assert all(row.replies is None for row in rows)
    assert {(row.message_tree_id, row.tree_state) for row in rows} == {("t-r", "growing")}


def test_filters_select_trees_and_messages(sample_path: Path) -> None:
    ready = list(read_message_trees(sample_path, filter=lambda t: t.tree_state == "ready_for_export"))
    assert ready and all(tree.tree_state == "ready_for_export" for tree in ready)
    assistants = list(read_messages(sample_path, filter=lambda m: m.role == "assistant"))
    assert assistants and all(m.role == "assistant" for m in assistants)


def test_dispatch_by_fields(node_dict: NodeDict) -> None:
    row = node_dict("m", None, message_tree_id="m", tree_state="growing")
    assert isinstance(read_oasst_obj(row), ExportMessageNode)
    tree = {"message_tree_id": "m", "tree_state": None, "prompt": node_dict("m", None)}
    assert isinstance(read_oasst_obj(tree), ExportMessageTree)


def test_gzip_is_detected_by_magic_bytes_and_suffix(tmp_path: Path, node_dict: NodeDict) -> None:
    data = gzip.compress(_lines(node_dict("a", None), node_dict("b", None)))
    misnamed = tmp_path / "messages.jsonl"
    misnamed.write_bytes(data)
    named = tmp_path / "messages.jsonl.gz"
    named.write_bytes(data)
    assert [m.message_id for m in read_messages(misnamed)] == ["a", "b"]
    assert [m.message_id for m in read_messages(named)] == ["a", "b"]


def test_blank_lines_are_skipped(tmp_path: Path, node_dict: NodeDict) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"\n" + _lines(node_dict("a", None)) + b"   \n\n" + _lines(node_dict("b", None)))
    assert [m.message_id for m in read_messages(path)] == ["a", "b"]


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "expected a JSON object, found list"),
        (b'{"hello": "world"}', "neither a message"),
        (b'{"message_id": "x", "text": "t", "role": "robot"}', "invalid message: role"),
        (b'{"message_tree_id": "x", "prompt": {"message_id": 1}}', "invalid message tree: prompt.message_id"),
        (b'{"message_id": "x", "text": "\xff", "role": "prompter"}', "not UTF-8"),
    ],
)
def test_bad_line_error_names_file_and_line(
    tmp_path: Path, node_dict: NodeDict, bad_line: bytes, expected: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(_lines(node_dict("a", None)) + b"\n" + bad_line + b"\n")
    with pytest.raises(OasstDataError) as info:
        list(read_oasst_jsonl(path))
    assert info.value.path == str(path)
    assert info.value.line == 3
    assert str(info.value).startswith(f"{path}:3: ")
    assert expected in str(info.value)


def test_truncated_gzip_is_a_data_error(tmp_path: Path, node_dict: NodeDict) -> None:
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(_lines(*(node_dict(f"m{i}", None) for i in range(100))))[:-20])
    with pytest.raises(OasstDataError, match="cannot decompress"):
        list(read_messages(path))


@pytest.mark.parametrize("compress", [False, True])
def test_dash_reads_stdin(monkeypatch: pytest.MonkeyPatch, node_dict: NodeDict, compress: bool) -> None:
    data = _lines(node_dict("a", None), node_dict("b", None))
    stdin = io.TextIOWrapper(io.BufferedReader(io.BytesIO(gzip.compress(data) if compress else data)))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert [m.message_id for m in read_messages("-")] == ["a", "b"]


def test_text_streams_are_accepted(node_dict: NodeDict) -> None:
    text = io.StringIO(_lines(node_dict("ä", None)).decode())
    assert [m.message_id for m in read_messages(text)] == ["ä"]


def test_open_jsonl_yields_decompressed_lines(tmp_path: Path) -> None:
    path = tmp_path / "two.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"a": 1}\n{"b": 2}\n'))
    with open_jsonl(path) as stream:
        assert [json.loads(line) for line in stream] == [{"a": 1}, {"b": 2}]
