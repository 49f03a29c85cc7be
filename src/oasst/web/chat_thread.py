"""The thread a chat page shows: from the root (or a chosen message) down the newest branch, each step
with its alternatives for the ``‹ i/n ›`` navigator, stopping at a group of drafts nobody has picked yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from oasst.inference.protocol import MessageRead

__all__ = ["Turn", "active_thread", "unpicked_drafts"]


@dataclass
class Turn:
    """One step of the shown thread: a message, its alternatives (``‹ i/n ›``), and, for drafts not
    picked yet, the whole draft group shown side by side."""

    message: MessageRead
    siblings: list[MessageRead]
    drafts: list[MessageRead] = field(default_factory=list)

    @property
    def index(self) -> int:
        return next(i for i, m in enumerate(self.siblings) if m.id == self.message.id) + 1


def unpicked_drafts(message: MessageRead, siblings: list[MessageRead]) -> list[MessageRead]:
    """The draft group ``message`` belongs to, if nobody has picked one of it yet (else empty)."""
    if message.draft_group is None:
        return []
    group = [m for m in siblings if m.draft_group == message.draft_group]
    return [] if any(m.selected for m in group) else group


def _default_child(children: list[MessageRead]) -> MessageRead:
    """The newest alternative; of a draft group, the draft the person picked."""
    newest = children[-1]
    if newest.draft_group is not None:
        picked = [m for m in children if m.draft_group == newest.draft_group and m.selected]
        if picked:
            return picked[0]
    return newest


def active_thread(messages: list[MessageRead], at: str | None = None) -> list[Turn]:
    """Root to ``at`` (default: the root), then down the newest branch; stops at drafts not picked yet."""
    by_id = {m.id: m for m in messages}
    children: dict[str | None, list[MessageRead]] = {}
    for m in messages:
        children.setdefault(m.parent_id, []).append(m)
    start = by_id.get(at) if at else None
    path: list[MessageRead] = []
    node = start
    while node is not None:
        path.append(node)
        node = by_id.get(node.parent_id) if node.parent_id else None
    path.reverse()
    if not path and children.get(None):
        path = [_default_child(children[None])]
    while path and children.get(path[-1].id):
        path.append(_default_child(children[path[-1].id]))
    turns: list[Turn] = []
    for message in path:
        siblings = children.get(message.parent_id, [message])
        drafts = unpicked_drafts(message, siblings)
        turns.append(Turn(message, siblings, drafts))
        if drafts:
            break
    return turns
