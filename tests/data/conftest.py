"""Fixtures for the data-format tests: the real oasst2 sample and small hand-made trees."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import sample_missing

from oasst.data import ExportMessageTree

# the repository sits at /work/main and shared files at /work/shared: ../shared from the repo root
SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "oasst2_sample.trees.jsonl"
SAMPLE_TREES = 551
SAMPLE_MESSAGES = 1552


@pytest.fixture(scope="session")
def sample_path() -> Path:
    """The real oasst2 sample export (551 trees, 1,552 messages)."""
    if not SAMPLE.exists():
        sample_missing(f"the oasst2 sample at {SAMPLE}")
    return SAMPLE


def _node_dict(
    message_id: str, parent_id: str | None, role: str = "prompter", **extra: Any
) -> dict[str, Any]:
    """A minimal message as it appears in a JSONL line."""
    return {
        "message_id": message_id,
        "parent_id": parent_id,
        "user_id": f"user-{message_id}",
        "created_date": "2023-02-12T19:06:16.233571+00:00",
        "text": f"text of {message_id}",
        "role": role,
        "lang": "en",
        **extra,
    }


@pytest.fixture
def node_dict() -> Callable[..., dict[str, Any]]:
    """A factory of minimal message dicts: node_dict(message_id, parent_id, role="prompter", **fields)."""
    return _node_dict


@pytest.fixture
def make_tree() -> Callable[..., ExportMessageTree]:
    """Build the tree  r → (a1 → p1 → (a2, a3)), (a4)  with the given tree id prefix."""

    def make(prefix: str = "t", tree_state: str = "ready_for_export") -> ExportMessageTree:
        def n(name: str, parent: str | None, role: str, replies: list[dict[str, Any]]) -> dict[str, Any]:
            parent_id = f"{prefix}-{parent}" if parent else None
            return _node_dict(f"{prefix}-{name}", parent_id, role, replies=replies)

        prompt = n(
            "r",
            None,
            "prompter",
            [
                n(
                    "a1",
                    "r",
                    "assistant",
                    [
                        n(
                            "p1",
                            "a1",
                            "prompter",
                            [n("a2", "p1", "assistant", []), n("a3", "p1", "assistant", [])],
                        )
                    ],
                ),
                n("a4", "r", "assistant", []),
            ],
        )
        return ExportMessageTree.model_validate(
            {"message_tree_id": f"{prefix}-r", "tree_state": tree_state, "prompt": prompt, "origin": None}
        )

    return make
