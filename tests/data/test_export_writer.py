"""Writing exports: lossless round trips, exclude_none, gzip, stdout, and no half-written files."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from oasst.data import (
    ExportMessageNode,
    ExportMessageTree,
    read_message_trees,
    read_messages,
    write_message_trees,
    write_messages,
)

SAMPLE_TREES = 551
SAMPLE_MESSAGES = 1552


def _walk_nodes(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    stack = [obj["prompt"]] if "prompt" in obj else [obj]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.get("replies") or [])


@pytest.mark.parametrize("name", ["out.trees.jsonl", "out.trees.jsonl.gz"])
def test_round_trip_is_byte_identical(sample_path: Path, tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    assert write_message_trees(out, read_message_trees(sample_path)) == SAMPLE_TREES
    raw = out.read_bytes()
    if name.endswith(".gz"):
        raw = gzip.decompress(raw)
    # every field kept: unknown ones (CRITERIA), detoxify, explicit nulls, key order, float spelling
    assert raw == sample_path.read_bytes()


def test_exclude_none_drops_nulls_and_reads_back_equal(sample_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "slim.jsonl"
    write_message_trees(out, read_message_trees(sample_path), exclude_none=True)
    slim = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    full = [json.loads(line) for line in sample_path.read_text(encoding="utf-8").splitlines()]
    assert all(None not in node.values() for tree in slim for node in _walk_nodes(tree))
    assert all("origin" not in tree for tree in slim)
    assert any("model_name" in node for tree in full for node in _walk_nodes(tree))
    assert [t.model_dump() for t in read_message_trees(out)] == [
        t.model_dump() for t in read_message_trees(sample_path)
    ]
    # CRITERIA survives exclude_none too
    assert any("CRITERIA" in node for tree in slim for node in _walk_nodes(tree))


def test_flat_round_trip_keeps_every_message(sample_path: Path, tmp_path: Path) -> None:
    flat = tmp_path / "flat.jsonl.gz"
    assert write_messages(flat, read_messages(sample_path)) == SAMPLE_MESSAGES
    assert [m.model_dump() for m in read_messages(flat)] == [
        m.model_dump() for m in read_messages(sample_path)
    ]


def test_gzip_output_is_reproducible(make_tree: Callable[..., ExportMessageTree], tmp_path: Path) -> None:
    first, second = tmp_path / "1" / "x.jsonl.gz", tmp_path / "2" / "x.jsonl.gz"
    for path in (first, second):
        path.parent.mkdir()
        write_message_trees(path, [make_tree("x")])
    assert gzip.decompress(first.read_bytes()).count(b"\n") == 1
    assert first.read_bytes() == second.read_bytes()  # no timestamp in the header


def test_dash_writes_stdout(make_tree: Callable[..., ExportMessageTree], capsysbinary: Any) -> None:
    assert write_message_trees("-", [make_tree("x"), make_tree("y")]) == 2
    out = capsysbinary.readouterr().out
    assert [json.loads(line)["message_tree_id"] for line in out.splitlines()] == ["x-r", "y-r"]


def test_open_text_and_binary_files_are_left_open(make_tree: Callable[..., ExportMessageTree]) -> None:
    text, binary = io.StringIO(), io.BytesIO()
    write_message_trees(text, [make_tree("ü")])
    write_message_trees(binary, [make_tree("ü")])
    assert not text.closed and not binary.closed
    assert text.getvalue().encode() == binary.getvalue()
    assert '"ü-r"' in text.getvalue()  # ensure_ascii=False


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(
    make_tree: Callable[..., ExportMessageTree], tmp_path: Path
) -> None:
    out = tmp_path / "export.jsonl"
    out.write_text("previous export\n")

    def trees() -> Iterator[ExportMessageTree]:
        yield make_tree("x")
        raise RuntimeError("database went away")

    with pytest.raises(RuntimeError):
        write_message_trees(out, trees())
    assert out.read_text() == "previous export\n"
    assert [p.name for p in tmp_path.iterdir()] == ["export.jsonl"]


def test_writes_to_non_regular_files_in_place(make_tree: Callable[..., ExportMessageTree]) -> None:
    # /dev/null must be written to, never replaced by a temporary file
    assert write_message_trees("/dev/null", [make_tree("x")]) == 1
    assert Path("/dev/null").is_char_device()


def test_write_messages_accepts_nodes_with_unknown_fields(tmp_path: Path) -> None:
    node = ExportMessageNode.model_validate({"message_id": "m", "text": "t", "role": "prompter", "x": 1})
    out = tmp_path / "m.jsonl"
    write_messages(out, iter([node]), exclude_none=True)
    assert json.loads(out.read_text()) == {"message_id": "m", "text": "t", "role": "prompter", "x": 1}
