"""Replacing the ids of an export with keyed hashes before it is published.

The hash is the original's: sha256 hex of `"{collection}:{id}{seed}"`, so the same id maps to the same
value everywhere in one export (parent links, ranking ballots and user ids still join up) and to an
unrelated value under another seed. Collections are `message`, `user` and `message_tree`; as in the
original, a tree id is hashed in `message_tree`, so it no longer equals its root message's id. The seed
is the secret: anyone who knows it can test a guessed id.
"""

from __future__ import annotations

from hashlib import sha256

from oasst.data.schemas import ExportMessageEventRanking, ExportMessageNode, ExportMessageTree
from oasst.data.traversal import iter_messages

__all__ = ["Anonymizer"]

MESSAGE = "message"
USER = "user"
MESSAGE_TREE = "message_tree"
SPLIT_GROUP = "split_group"


class Anonymizer:
    """Deterministic id anonymiser for one export; pick a fresh secret seed per published release."""

    def __init__(self, seed: int | str) -> None:
        self.seed = seed

    def anonymize(self, collection: str, key: str) -> str:
        """Return the anonymous id of `key` in `collection` (`message`, `user`, `message_tree` or
        `split_group`)."""
        return sha256(f"{collection}:{key}{self.seed}".encode()).hexdigest()

    def _maybe(self, collection: str, key: str | None) -> str | None:
        return None if key is None else self.anonymize(collection, key)

    def anonymize_tree(self, tree: ExportMessageTree) -> ExportMessageTree:
        """Return a copy of `tree` with every id anonymised; the input is left unchanged."""
        copy = tree.model_copy(deep=True)
        copy.message_tree_id = self.anonymize(MESSAGE_TREE, tree.message_tree_id)
        copy.split_group = self._maybe(SPLIT_GROUP, tree.split_group)
        self._anonymize_in_place(copy.prompt)
        return copy

    def anonymize_message(self, node: ExportMessageNode) -> ExportMessageNode:
        """Return a copy of a message (a flat row, or a subtree with its replies) with ids anonymised."""
        copy = node.model_copy(deep=True)
        self._anonymize_in_place(copy)
        return copy

    def _anonymize_in_place(self, root: ExportMessageNode | None) -> None:
        for node in iter_messages(root):
            node.message_id = self.anonymize(MESSAGE, node.message_id)
            node.parent_id = self._maybe(MESSAGE, node.parent_id)
            node.user_id = self._maybe(USER, node.user_id)
            node.message_tree_id = self._maybe(MESSAGE_TREE, node.message_tree_id)
            for events in (node.events or {}).values():
                for event in events:
                    event.user_id = self._maybe(USER, event.user_id)
                    if isinstance(event, ExportMessageEventRanking):
                        event.ranked_message_ids = [
                            self.anonymize(MESSAGE, i) for i in event.ranked_message_ids
                        ]
                        event.ranking_parent_id = self._maybe(MESSAGE, event.ranking_parent_id)
                        event.message_tree_id = self._maybe(MESSAGE_TREE, event.message_tree_id)
