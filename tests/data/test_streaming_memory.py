"""Readers and writers stream: memory stays flat however large the export.

A full oasst export has millions of messages; a reader that loads the file, or a writer that lists its
input, runs a laptop out of memory. 25,000 messages in 2,500 trees (about 20 MB as flat rows) go through
every path while tracemalloc watches the peak of Python allocations: one tree in flight, plus pydantic's
bounded cache of short JSON strings (about 1.5 MiB), must stay far below the size of the files. The
file is smaller than a real export because tracemalloc slows allocation-heavy code about sixfold.
"""

from __future__ import annotations

import gzip
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from oasst.data import (
    ExportMessageNode,
    ExportMessageTree,
    Role,
    read_message_trees,
    read_messages,
    write_message_trees,
    write_messages,
)

TREES = 2_500
PER_TREE = 10
PEAK_LIMIT = (
    4 * 1024 * 1024
)  # bytes; the flat file is about 20 MB, a loaded copy would take several times that

R = TypeVar("R")


def _message(
    t: int, i: int, parent: int | None, role: Role, replies: list[ExportMessageNode]
) -> ExportMessageNode:
    def uid(n: int) -> str:
        return f"{t:08x}-{n:04x}-4000-8000-000000000000"

    return ExportMessageNode(
        message_id=uid(i),
        parent_id=None if parent is None else uid(parent),
        user_id=uid(i)[::-1],
        text=f"message {i} of tree {t} " * 12,
        role=role,
        lang="en",
        review_count=3,
        review_result=True,
        deleted=False,
        synthetic=False,
        emojis={"+1": i},
        replies=replies,
    )


def _synthetic_trees() -> Iterator[ExportMessageTree]:
    """Trees of 10 messages: a prompt, 3 replies, each with 1 or 2 follow-ups, one of them answered."""
    for t in range(TREES):
        answered = _message(t, 4, 1, "prompter", [_message(t, 9, 4, "assistant", [])])
        replies = [
            _message(t, 1, 0, "assistant", [answered, _message(t, 5, 1, "prompter", [])]),
            _message(
                t, 2, 0, "assistant", [_message(t, 6, 2, "prompter", []), _message(t, 7, 2, "prompter", [])]
            ),
            _message(t, 3, 0, "assistant", [_message(t, 8, 3, "prompter", [])]),
        ]
        prompt = _message(t, 0, None, "prompter", replies)
        yield ExportMessageTree(
            message_tree_id=prompt.message_id, tree_state="ready_for_export", prompt=prompt
        )


def _peak(step: Callable[[], R]) -> tuple[R, int]:
    tracemalloc.start()
    try:
        result = step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.mark.slow
def test_reading_and_writing_large_exports_keeps_memory_flat(tmp_path: Path) -> None:
    trees_path = tmp_path / "big.trees.jsonl.gz"
    flat_path = tmp_path / "big.messages.jsonl"
    again_path = tmp_path / "again.trees.jsonl"

    written, write_peak = _peak(lambda: write_message_trees(trees_path, _synthetic_trees()))
    assert written == TREES

    flat, flat_peak = _peak(lambda: write_messages(flat_path, read_messages(trees_path)))
    assert flat == TREES * PER_TREE
    assert flat_path.stat().st_size > 4 * PEAK_LIMIT

    rebuilt, rebuild_peak = _peak(lambda: write_message_trees(again_path, read_message_trees(flat_path)))
    assert rebuilt == TREES

    peaks = {"write trees": write_peak, "trees -> flat": flat_peak, "flat -> trees": rebuild_peak}
    assert max(peaks.values()) < PEAK_LIMIT, {k: f"{v / 2**20:.1f} MiB" for k, v in peaks.items()}
    with gzip.open(trees_path, "rb") as original, again_path.open("rb") as again:
        assert all(a == b for a, b in zip(original, again, strict=True))
