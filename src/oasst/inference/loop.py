"""Closing the loop: the chats people allowed us to use, as oasst message trees and as preference data.

Pure functions over chats as the inference server stores them (:class:`ChatRecord`: the chat, its
message tree, and its reports — ``oasst.inference.server.services.export.OptedInChat`` is one). Nothing
here reads a database or a file; ``oasst inference export`` feeds them and writes what they return.

**Trees** (:func:`chat_to_trees`): an ``ExportMessageTree`` per first user message of a chat (editing the
first message starts another tree, as it is another prompt).

* user messages become ``prompter`` nodes (``user_id`` = the chat's owner); assistant messages become
  ``assistant`` nodes with ``synthetic=True`` and ``model_name`` (they are model output, so training's
  filters leave them out unless asked: ``include_synthetic``);
* only *complete*, non-empty assistant messages are kept; a pending, failed, timed-out or stopped one is
  left out together with everything below it;
* ``tree_state`` is null (the tree went through no review; the backend importer puts such trees into
  ``growing``, training's default state filter skips them) and ``origin`` is ``"oasst-inference"``;
* ``split_group`` is the chat's id, so a train/validation split keeps every tree of one chat (its
  first message and the edits of it, which often ask nearly the same) on one side;
* ``lang`` is the language given (the chat API has no language setting), or what ``detect_lang`` says
  of the first message, else ``"und"``;
* a vote (``score`` ±1) is the emoji ``"+1"``/``"-1"`` in ``emojis`` (the backend's thumbs) and a
  ``score`` event ``{"type": "score", "user_id", "score"}``; a report is a ``report`` event; a draft pick
  is a ``draft_pick`` event on the *parent* message, ``{"type": "draft_pick", "user_id",
  "selected_message_id", "draft_message_ids"}`` (an event type the format keeps as it is).

**Preferences** (:func:`chat_preferences`): pairs of sibling assistant replies to one user message.

* draft pick: the picked draft is chosen over each other complete draft of its group;
* votes: a reply voted +1 is chosen over each sibling voted -1 (and over each unvoted one with
  ``neutral_is_rejected``);
* a pair that another source contradicts (A over B and B over A) is dropped on both sides.

They come out as training's records (`docs/training/data.md`): DPO pairs ``{"prompt", "chosen",
"rejected", "tree_id", "split_group", "lang", "source", "chosen_id", "rejected_id"}`` and RM groups
``{"prompt", "replies" (best first), "tree_id", "split_group", "lang"}``. An RM group claims a full
order, so the replies of one user message form a single group only when their pairs order them
completely (two drafts and a pick; +1 over -1); otherwise each pair is a group of two.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from oasst.data import (
    Anonymizer,
    ExportMessageEventOther,
    ExportMessageEventReport,
    ExportMessageEventScore,
    ExportMessageNode,
    ExportMessageTree,
)
from oasst.inference.protocol import ChatRead, MessageRead, MessageState, Role

__all__ = [
    "ORIGIN",
    "ChatRecord",
    "LoopOptions",
    "PreferencePair",
    "ReportLike",
    "chat_preferences",
    "chat_to_trees",
    "dpo_record",
    "rm_records",
]

ORIGIN = "oasst-inference"
UNKNOWN_LANG = "und"
Source = Literal["draft_pick", "vote"]


class ReportLike(Protocol):
    @property
    def message_id(self) -> str: ...
    @property
    def report_type(self) -> str: ...
    @property
    def reason(self) -> str: ...


class ChatRecord(Protocol):
    """One chat of a person who allows data use, with its whole message tree."""

    @property
    def user_id(self) -> str: ...
    @property
    def chat(self) -> ChatRead: ...
    @property
    def messages(self) -> Sequence[MessageRead]: ...
    @property
    def reports(self) -> Sequence[ReportLike]: ...


@dataclass(frozen=True)
class LoopOptions:
    """How chats become trees and preference records."""

    lang: str | None = None  # the language of every chat; None: detect_lang, else "und"
    detect_lang: Callable[[str], str | None] | None = None  # text of the first message -> code or None
    neutral_is_rejected: bool = False  # votes: +1 also over unvoted (0) siblings
    include_system: bool = False  # start preference prompts with the chat's system prompt
    anonymizer: Anonymizer | None = None  # replace message, user and tree ids by keyed hashes


@dataclass(frozen=True)
class PreferencePair:
    """``chosen`` was preferred over ``rejected``; both answer the last user turn of ``prompt``."""

    tree_id: str
    split_group: str  # the chat's id: every record of one chat stays on one side of a split
    lang: str
    parent_id: str
    prompt: list[dict[str, str]]
    chosen: MessageRead
    rejected: MessageRead
    source: Source


@dataclass
class _Index:
    by_id: dict[str, MessageRead]
    children: dict[str | None, list[MessageRead]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def of(cls, messages: Iterable[MessageRead]) -> _Index:
        ordered = sorted(messages, key=lambda m: (m.created_at, m.id))
        index = cls(by_id={m.id: m for m in ordered})
        for m in ordered:
            index.children[m.parent_id].append(m)
        return index

    def roots(self) -> list[MessageRead]:
        """The chat's first user messages, oldest first: an edit of the first message is another root."""
        return [m for m in self.children.get(None, []) if m.role == Role.user]

    def path(self, message: MessageRead) -> list[MessageRead]:
        """Root to ``message``, both included."""
        out = [message]
        while out[-1].parent_id is not None and out[-1].parent_id in self.by_id:
            out.append(self.by_id[out[-1].parent_id])
        out.reverse()
        return out


def _usable(message: MessageRead) -> bool:
    """Whether a message belongs in the data: every user message; complete assistant replies with text."""
    if message.role == Role.user:
        return bool(message.content.strip())
    return (
        message.role == Role.assistant
        and message.state == MessageState.complete
        and bool(message.content.strip())
    )


def _lang(record: ChatRecord, root: MessageRead, options: LoopOptions) -> str:
    if options.lang:
        return options.lang
    if options.detect_lang is not None:
        detected = options.detect_lang(root.content)
        if detected:
            return detected
    return UNKNOWN_LANG


# --------------------------------------------------------------------------------------------- trees


def chat_to_trees(record: ChatRecord, options: LoopOptions | None = None) -> list[ExportMessageTree]:
    """The chat as oasst message trees: one per first message (an edited first message starts another),
    each only if it holds a complete assistant reply."""
    options = options or LoopOptions()
    index = _Index.of(record.messages)
    events_of: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for report in record.reports:
        events_of[report.message_id]["report"].append(
            ExportMessageEventReport(
                user_id=record.user_id, report_type=report.report_type, reason=report.reason
            )
        )
    for parent_id, picked, drafts in _draft_picks(index):
        events_of[parent_id]["draft_pick"].append(
            ExportMessageEventOther.model_validate(
                {
                    "type": "draft_pick",
                    "user_id": record.user_id,
                    "selected_message_id": picked.id,
                    "draft_message_ids": [d.id for d in drafts],
                }
            )
        )
    trees = []
    for root in index.roots():
        tree = _tree(record, index, root, events_of, options) if _usable(root) else None
        if tree is not None:
            trees.append(tree)
    return trees


def _tree(
    record: ChatRecord,
    index: _Index,
    root: MessageRead,
    events_of: dict[str, dict[str, list[Any]]],
    options: LoopOptions,
) -> ExportMessageTree | None:
    lang = _lang(record, root, options)

    def node(message: MessageRead) -> ExportMessageNode:
        replies = [node(child) for child in index.children.get(message.id, []) if _usable(child)]
        events = dict(events_of.get(message.id, {}))
        emojis: dict[str, int] | None = None
        is_assistant = message.role == Role.assistant
        if is_assistant and message.score:
            emojis = {"+1" if message.score > 0 else "-1": 1}
            events["score"] = [ExportMessageEventScore(user_id=record.user_id, score=message.score)]
        return ExportMessageNode(
            message_id=message.id,
            parent_id=message.parent_id,
            user_id=None if is_assistant else record.user_id,
            created_date=message.created_at,
            text=message.content,
            role="assistant" if is_assistant else "prompter",
            lang=lang,
            synthetic=is_assistant,
            model_name=message.model if is_assistant else None,
            emojis=emojis,
            replies=replies,
            events=events or None,
        )

    prompt = node(root)
    if not any(n.role == "assistant" for n in _walk(prompt)):
        return None
    tree = ExportMessageTree(
        message_tree_id=root.id, tree_state=None, prompt=prompt, origin=ORIGIN, split_group=record.chat.id
    )
    if options.anonymizer is not None:
        tree = options.anonymizer.anonymize_tree(tree)
        _anonymize_draft_picks(tree, options.anonymizer)
    return tree


def _walk(node: ExportMessageNode) -> Iterator[ExportMessageNode]:
    yield node
    for child in node.replies or ():
        yield from _walk(child)


def _anonymize_draft_picks(tree: ExportMessageTree, anonymizer: Anonymizer) -> None:
    # the Anonymizer knows the format's own events; the ids inside draft_pick events are ours to hash
    assert tree.prompt is not None
    for n in _walk(tree.prompt):
        for event in (n.events or {}).get("draft_pick", ()):
            extra = event.model_extra or {}
            extra["selected_message_id"] = anonymizer.anonymize("message", extra["selected_message_id"])
            extra["draft_message_ids"] = [
                anonymizer.anonymize("message", i) for i in extra["draft_message_ids"]
            ]


# --------------------------------------------------------------------------------------- preferences


def _draft_picks(index: _Index) -> Iterator[tuple[str, MessageRead, list[MessageRead]]]:
    """(parent id, picked draft, every complete draft of its group) for each group with a pick."""
    groups: dict[str, list[MessageRead]] = defaultdict(list)
    for m in index.by_id.values():
        if m.role == Role.assistant and m.draft_group is not None and m.parent_id is not None:
            groups[m.draft_group].append(m)
    for drafts in groups.values():
        picked = [d for d in drafts if d.selected and _usable(d)]
        if len(picked) != 1 or picked[0].parent_id is None:
            continue
        yield picked[0].parent_id, picked[0], [d for d in drafts if _usable(d)]


def _prompt(index: _Index, parent: MessageRead, chat: ChatRead, options: LoopOptions) -> list[dict[str, str]]:
    turns = [{"role": m.role.value, "content": m.content} for m in index.path(parent)]
    if options.include_system and chat.system_prompt:
        turns.insert(0, {"role": "system", "content": chat.system_prompt})
    return turns


def chat_preferences(record: ChatRecord, options: LoopOptions | None = None) -> list[PreferencePair]:
    """Every preference the chat's owner expressed by picking drafts and voting, without contradictions."""
    options = options or LoopOptions()
    index = _Index.of(record.messages)
    found: dict[tuple[str, str], Source] = {}
    for _parent_id, picked, drafts in _draft_picks(index):
        for other in drafts:
            if other.id != picked.id:
                found.setdefault((picked.id, other.id), "draft_pick")
    for replies in index.children.values():
        replies = [r for r in replies if r.role == Role.assistant and _usable(r)]
        losers = [r for r in replies if r.score < 0 or (options.neutral_is_rejected and r.score == 0)]
        for winner in (r for r in replies if r.score > 0):
            for loser in losers:
                found.setdefault((winner.id, loser.id), "vote")
    contradicted = {pair for pair in found if (pair[1], pair[0]) in found}
    pairs = []
    for (chosen_id, rejected_id), source in found.items():
        if (chosen_id, rejected_id) in contradicted:
            continue
        chosen, rejected = index.by_id[chosen_id], index.by_id[rejected_id]
        parent = index.by_id.get(chosen.parent_id or "")
        if parent is None or parent.role != Role.user:
            continue
        root = index.path(parent)[0]
        if root.parent_id is not None:  # an orphan branch (its root is gone): not part of any tree
            continue
        tree_id, split_group = root.id, record.chat.id
        if options.anonymizer is not None:
            tree_id = options.anonymizer.anonymize("message_tree", root.id)
            split_group = options.anonymizer.anonymize("split_group", split_group)
        pairs.append(
            PreferencePair(
                tree_id=tree_id,
                split_group=split_group,
                lang=_lang(record, root, options),
                parent_id=parent.id,
                prompt=_prompt(index, parent, record.chat, options),
                chosen=chosen,
                rejected=rejected,
                source=source,
            )
        )
    return pairs


def _message_id(message: MessageRead, options: LoopOptions | None) -> str:
    if options is not None and options.anonymizer is not None:
        return options.anonymizer.anonymize("message", message.id)
    return message.id


def dpo_record(pair: PreferencePair, options: LoopOptions | None = None) -> dict[str, Any]:
    """A DPO record as ``oasst train dpo`` reads it (``read_records(kind="dpo")``)."""
    return {
        "prompt": pair.prompt,
        "chosen": [{"role": "assistant", "content": pair.chosen.content}],
        "rejected": [{"role": "assistant", "content": pair.rejected.content}],
        "tree_id": pair.tree_id,
        "split_group": pair.split_group,
        "lang": pair.lang,
        "source": pair.source,
        "chosen_id": _message_id(pair.chosen, options),
        "rejected_id": _message_id(pair.rejected, options),
    }


def rm_records(pairs: Sequence[PreferencePair]) -> list[dict[str, Any]]:
    """RM groups (``read_records(kind="rm")``): per user message, one group when its pairs give a full
    order of the replies involved, else one group of two per pair."""
    by_parent: dict[tuple[str, str], list[PreferencePair]] = defaultdict(list)
    for pair in pairs:
        by_parent[(pair.tree_id, pair.parent_id)].append(pair)
    records: list[dict[str, Any]] = []
    for group in by_parent.values():
        order = _total_order(group)
        first = group[0]
        chains = [order] if order is not None else [[p.chosen, p.rejected] for p in group]
        for chain in chains:
            records.append(
                {
                    "prompt": first.prompt,
                    "replies": [m.content for m in chain],
                    "tree_id": first.tree_id,
                    "split_group": first.split_group,
                    "lang": first.lang,
                }
            )
    return records


def _total_order(pairs: Sequence[PreferencePair]) -> list[MessageRead] | None:
    """The replies best first if the pairs (closed transitively) compare every two of them, else None."""
    nodes = {p.chosen.id: p.chosen for p in pairs} | {p.rejected.id: p.rejected for p in pairs}
    better: dict[str, set[str]] = {n: set() for n in nodes}  # id -> ids it beats
    for p in pairs:
        better[p.chosen.id].add(p.rejected.id)
    changed = True
    while changed:  # transitive closure; groups are a handful of replies
        changed = False
        for beaten in better.values():
            extra: set[str] = set().union(*(better[b] for b in beaten)) - beaten
            if extra:
                beaten |= extra
                changed = True
    if any(n in better[n] for n in nodes):
        return None  # a cycle
    ordered = sorted(nodes.values(), key=lambda m: -len(better[m.id]))
    for i, a in enumerate(ordered):
        for b in ordered[i + 1 :]:
            if b.id not in better[a.id]:
                return None
    return ordered
