"""Rebuilding trees from flat message files (the HF flat release, oasst's flat exports)."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from oasst.data import (
    ExportMessageTree,
    OasstDataError,
    read_message_trees,
    read_messages,
    write_message_trees,
    write_messages,
)

NodeDict = Callable[..., dict[str, Any]]


def _flat_bytes(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def _rows(path: Path) -> list[dict[str, Any]]:
    return [m.model_dump(mode="json") for m in read_messages(path)]


def test_flat_file_rebuilds_the_tree_file(sample_path: Path, tmp_path: Path) -> None:
    flat = tmp_path / "flat.jsonl"
    write_messages(flat, read_messages(sample_path))
    rebuilt = tmp_path / "rebuilt.trees.jsonl"
    write_message_trees(rebuilt, read_message_trees(flat))
    assert rebuilt.read_bytes() == sample_path.read_bytes()


def test_ungrouped_flat_file_needs_grouped_false(sample_path: Path) -> None:
    # the sample lists 31 trees twice (scored twice for CRITERIA); shuffled, the copies would mix
    rows = list({(r["message_tree_id"], r["message_id"]): r for r in _rows(sample_path)}.values())
    random.Random(7).shuffle(rows)
    data = _flat_bytes(rows)
    with pytest.raises(OasstDataError, match="grouped=False"):
        list(read_message_trees(io.BytesIO(data)))
    trees = list(read_message_trees(io.BytesIO(data), grouped=False))
    expected = {t.message_tree_id: t for t in read_message_trees(sample_path)}
    assert len(trees) == len(expected)
    for tree in trees:
        assert tree.prompt is not None
        # replies come back in file order, so compare the sets of (parent, child) links
        got = {(m["parent_id"], m["message_id"]) for m in _links(tree)}
        want = {(m["parent_id"], m["message_id"]) for m in _links(expected[tree.message_tree_id])}
        assert got == want
        assert tree.tree_state == expected[tree.message_tree_id].tree_state


def _links(tree: ExportMessageTree) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    stack = [tree.prompt] if tree.prompt else []
    while stack:
        node = stack.pop()
        out.append({"parent_id": node.parent_id, "message_id": node.message_id})
        stack.extend(node.replies or [])
    return out


def test_rows_without_tree_ids_are_grouped_depth_first(node_dict: NodeDict) -> None:
    rows = [
        node_dict("r1", None),
        node_dict("a1", "r1", "assistant"),
        node_dict("a2", "r1", "assistant"),
        node_dict("r2", None),
        node_dict("a3", "r2", "assistant"),
    ]
    trees = list(read_message_trees(io.BytesIO(_flat_bytes(rows))))
    assert [t.message_tree_id for t in trees] == ["r1", "r2"]
    assert trees[0].prompt is not None and trees[0].prompt.replies is not None
    assert [r.message_id for r in trees[0].prompt.replies] == ["a1", "a2"]


def test_partial_export_cannot_be_rebuilt(node_dict: NodeDict) -> None:
    rows = [
        node_dict("r1", None, message_tree_id="r1"),
        node_dict("a9", "gone", "assistant", message_tree_id="r1"),
    ]
    with pytest.raises(OasstDataError, match="read_messages") as info:
        list(read_message_trees(io.BytesIO(_flat_bytes(rows))))
    assert info.value.line == 1  # where that tree's rows begin


def test_cycles_and_duplicates_are_errors(node_dict: NodeDict) -> None:
    looped = [
        node_dict("r", None, message_tree_id="t"),
        node_dict("x", "y", message_tree_id="t"),
        node_dict("y", "x", message_tree_id="t"),
    ]
    with pytest.raises(OasstDataError, match="cycle"):
        list(read_message_trees(io.BytesIO(_flat_bytes(looped))))
    twice = [node_dict("r", None, message_tree_id="t")] + [node_dict("a", "r", message_tree_id="t")] * 2
    with pytest.raises(OasstDataError, match="twice"):
        list(read_message_trees(io.BytesIO(_flat_bytes(twice))))


def test_a_tree_listed_twice_in_a_row_comes_back_twice(node_dict: NodeDict) -> None:
    # merged releases repeat trees (the sample has 31); a second root row starts the copy
    copy = [node_dict("r", None, message_tree_id="t"), node_dict("a", "r", "assistant", message_tree_id="t")]
    trees = list(read_message_trees(io.BytesIO(_flat_bytes(copy + copy))))
    assert [(t.message_tree_id, t.prompt and len(t.prompt.replies or [])) for t in trees] == [
        ("t", 1),
        ("t", 1),
    ]


def test_row_without_tree_and_parent_context_is_an_error(node_dict: NodeDict) -> None:
    with pytest.raises(OasstDataError, match="no message_tree_id") as info:
        list(read_message_trees(io.BytesIO(_flat_bytes([node_dict("a", "r", "assistant")]))))
    assert info.value.line == 1


def test_bare_message_lines_with_replies_are_trees(node_dict: NodeDict) -> None:
    # a root message with nested replies and no tree wrapper, as the importer accepts
    bare = node_dict("r", None, replies=[node_dict("a", "r", "assistant", replies=[])])
    (tree,) = read_message_trees(io.BytesIO(_flat_bytes([bare])))
    assert tree.message_tree_id == "r" and tree.prompt is not None
    assert [m.message_id for m in tree.prompt.replies or []] == ["a"]
