"""Anonymising ids: the original's hash, deterministic per seed, links preserved."""

from __future__ import annotations

from collections.abc import Callable
from hashlib import sha256
from typing import Any

from oasst.data import (
    Anonymizer,
    ExportMessageEventRanking,
    ExportMessageNode,
    ExportMessageTree,
    iter_messages,
)

NodeDict = Callable[..., dict[str, Any]]


def test_hash_is_sha256_of_collection_key_seed() -> None:
    assert Anonymizer(42).anonymize("user", "abc") == sha256(b"user:abc42").hexdigest()
    assert Anonymizer(42).anonymize("user", "abc") == Anonymizer(42).anonymize("user", "abc")
    assert Anonymizer(42).anonymize("user", "abc") != Anonymizer(43).anonymize("user", "abc")
    assert Anonymizer(42).anonymize("user", "abc") != Anonymizer(42).anonymize("message", "abc")


def _tree_with_events(node_dict: NodeDict) -> ExportMessageTree:
    ballot = {
        "type": "ranking",
        "user_id": "voter",
        "ranking": [0, 1],
        "ranked_message_ids": ["a1", "a2"],
        "ranking_parent_id": "r",
        "message_tree_id": "r",
        "not_rankable": False,
    }
    emoji = {"type": "emoji", "user_id": "fan", "emoji": "+1"}
    prompt = node_dict(
        "r",
        None,
        events={"ranking": [ballot], "emoji": [emoji]},
        CRITERIA={"Relevance": 0.5},
        replies=[node_dict("a1", "r", "assistant"), node_dict("a2", "r", "assistant")],
    )
    return ExportMessageTree.model_validate(
        {"message_tree_id": "r", "tree_state": "ready_for_export", "prompt": prompt}
    )


def test_anonymize_tree_replaces_every_id_consistently(node_dict: NodeDict) -> None:
    tree = _tree_with_events(node_dict)
    before = tree.model_dump()
    anon = Anonymizer("s3cret")
    out = anon.anonymize_tree(tree)
    assert tree.model_dump() == before  # the input is untouched
    assert out.message_tree_id == anon.anonymize("message_tree", "r")
    root = out.prompt
    assert root is not None and root.replies is not None and root.events is not None
    assert root.message_id == anon.anonymize("message", "r")
    assert [r.parent_id for r in root.replies] == [root.message_id, root.message_id]
    assert {n.user_id for n in iter_messages(out)} == {
        anon.anonymize("user", f"user-{i}") for i in ("r", "a1", "a2")
    }
    ballot = root.events["ranking"][0]
    assert isinstance(ballot, ExportMessageEventRanking)
    assert ballot.ranked_message_ids == [r.message_id for r in root.replies]
    assert ballot.ranking_parent_id == root.message_id
    assert ballot.message_tree_id == out.message_tree_id
    assert ballot.user_id == anon.anonymize("user", "voter")
    assert root.events["emoji"][0].user_id == anon.anonymize("user", "fan")
    # text and unknown fields are not ids
    assert root.text == "text of r" and root.model_extra == {"CRITERIA": {"Relevance": 0.5}}


def test_anonymize_message_handles_flat_rows(node_dict: NodeDict) -> None:
    row = ExportMessageNode.model_validate(node_dict("a1", "r", "assistant", message_tree_id="r"))
    anon = Anonymizer(1)
    out = anon.anonymize_message(row)
    assert (out.message_id, out.parent_id, out.message_tree_id) == (
        anon.anonymize("message", "a1"),
        anon.anonymize("message", "r"),
        anon.anonymize("message_tree", "r"),
    )
