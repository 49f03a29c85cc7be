"""Training examples from oasst exports: SFT threads, reward-model groups, DPO pairs and RL prompts.

Every record is a plain dict in the conversational formats of TRL, so trainers can hand them to TRL as
they are (prompter messages become the "user" role):

* SFT: ``{"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}, ...], "tree_id", "lang"}``
* RM group: ``{"prompt": [messages up to the parent], "replies": [text, ...best first], "tree_id", "lang"}``
* DPO pair: ``{"prompt": [...], "chosen": [{"role": "assistant", ...}], "rejected": [...], "tree_id", "lang"}``
* RL prompt: ``{"prompt": [messages ending with a user turn], "tree_id", "lang"}``

A `TreeFilter` first prunes each tree: a message that fails it (deleted, rejected in review, synthetic,
another language, too short or long) is removed together with its replies, so no example contains it.
Ranks are then read among the replies that are left: when the best reply was deleted, the next one is
best. In oasst exports only assistant replies are ranked; prompter replies never are.

Everything streams tree by tree; `split_of` puts all records of a tree on one side of a train/validation
split, by a keyed hash of the tree id, without holding the data. Trees (and records) that carry a
`split_group` are split by it instead, so all of them land on the same side: the inference export gives
every tree of one chat the chat's id, since a chat whose first message was edited holds several trees
that often ask nearly the same thing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from oasst.data import ExportMessageNode, ExportMessageTree

__all__ = [
    "KINDS",
    "PAIRINGS",
    "Kind",
    "Pairing",
    "Record",
    "Thread",
    "TreeFilter",
    "dpo_pairs",
    "dpo_records",
    "extract",
    "filter_trees",
    "prune_tree",
    "ranked_groups",
    "rl_prompts",
    "rl_records",
    "rm_records",
    "sft_records",
    "sft_threads",
    "split_key",
    "split_of",
    "split_records",
    "to_messages",
]

Kind = Literal["sft", "rm", "dpo", "rl"]
KINDS: tuple[Kind, ...] = ("sft", "rm", "dpo", "rl")
Pairing = Literal["all", "best"]
PAIRINGS: tuple[Pairing, ...] = ("all", "best")
Record = dict[str, Any]
Thread = list[ExportMessageNode]
Split = Literal["train", "validation"]

UNKNOWN_LANG = "und"  # BCP 47 "undetermined", for trees and rows without a language


@dataclass(frozen=True)
class TreeFilter:
    """Which trees, and which messages of them, training may use.

    The defaults are those of the original Open Assistant recipes: only `ready_for_export` trees, and no
    deleted, rejected (review_result false) or synthetic message.
    """

    langs: frozenset[str] | None = None
    """Keep trees whose initial prompt is in one of these languages; None keeps every language."""
    per_message_lang: bool = False
    """Also drop every message (and its replies) whose own language is not in `langs`."""
    states: frozenset[str] | None = frozenset({"ready_for_export"})
    """Keep trees in these states; None keeps every state."""
    include_deleted: bool = False
    include_rejected: bool = False
    """Keep messages whose review_result is false (unreviewed ones, null, are always kept)."""
    include_synthetic: bool = False
    min_length: int = 0
    """Drop messages whose text (stripped) has fewer characters than this."""
    max_length: int | None = None
    """Drop messages whose text (stripped) has more characters than this."""

    def keeps_tree(self, tree: ExportMessageTree) -> bool:
        """Whether the tree as a whole passes: its state, and the language of its initial prompt."""
        if tree.prompt is None:
            return False
        if self.states is not None and tree.tree_state not in self.states:
            return False
        return self.langs is None or (tree.prompt.lang or UNKNOWN_LANG) in self.langs

    def keeps_message(self, node: ExportMessageNode) -> bool:
        """Whether one message passes (its replies are not looked at)."""
        if node.deleted and not self.include_deleted:
            return False
        if node.review_result is False and not self.include_rejected:
            return False
        if node.synthetic and not self.include_synthetic:
            return False
        if self.per_message_lang and self.langs is not None and node.lang and node.lang not in self.langs:
            return False
        length = len(node.text.strip())
        return length >= self.min_length and (self.max_length is None or length <= self.max_length)


def prune_tree(tree: ExportMessageTree, tree_filter: TreeFilter) -> ExportMessageTree | None:
    """A copy of `tree` without the messages `tree_filter` drops (and their replies), or None.

    None when the tree itself fails the filter or its initial prompt is dropped. The input is not changed.
    """
    if not tree_filter.keeps_tree(tree) or tree.prompt is None or not tree_filter.keeps_message(tree.prompt):
        return None
    root = tree.prompt.model_copy(update={"replies": []})
    stack = [(tree.prompt, root)]
    while stack:
        source, copy = stack.pop()
        for reply in source.replies or ():
            if tree_filter.keeps_message(reply):
                kept = reply.model_copy(update={"replies": []})
                assert copy.replies is not None
                copy.replies.append(kept)
                stack.append((reply, kept))
    return tree.model_copy(update={"prompt": root})


def filter_trees(trees: Iterable[ExportMessageTree], tree_filter: TreeFilter) -> Iterator[ExportMessageTree]:
    """Prune every tree with `prune_tree`, leaving out those that do not pass at all."""
    for tree in trees:
        pruned = prune_tree(tree, tree_filter)
        if pruned is not None:
            yield pruned


# --- threads, groups, pairs and prompts of one (already pruned) tree ---------------------------------


def _ranked(replies: list[ExportMessageNode]) -> list[ExportMessageNode]:
    """The ranked replies, best first (the export's rank, 0 = best)."""
    return sorted((r for r in replies if r.rank is not None), key=lambda r: r.rank or 0)


def _top_k_replies(node: ExportMessageNode, top_k: int | None) -> list[ExportMessageNode]:
    """The replies a thread may continue with under a top-k filter.

    Prompter replies are never ranked and always kept. Among several assistant replies, only the k best
    ranked are; an unranked one cannot be shown to be among them and is left out (as in the original). A
    lone assistant reply is kept whatever its rank.
    """
    replies = node.replies or []
    if top_k is None or sum(r.role == "assistant" for r in replies) <= 1:
        return replies
    best = {id(r) for r in _ranked([r for r in replies if r.role == "assistant"])[:top_k]}
    return [r for r in replies if r.role == "prompter" or id(r) in best]


def _best_reply(node: ExportMessageNode) -> ExportMessageNode | None:
    """The reply the best path follows: the best ranked one; else the only or first prompter reply.

    Several unranked assistant replies have no best one, so the path ends there.
    """
    replies = node.replies or []
    if ranked := _ranked(replies):
        return ranked[0]
    if len(replies) == 1 or (replies and replies[0].role == "prompter"):
        return replies[0]
    return None


def _until_last_assistant(path: Thread) -> Thread:
    for end in range(len(path), 0, -1):
        if path[end - 1].role == "assistant":
            return path[:end]
    return []


def sft_threads(
    tree: ExportMessageTree, *, top_k: int | None = None, best_path: bool = False
) -> Iterator[Thread]:
    """Yield the conversations of a tree that SFT trains on, each ending with an assistant reply.

    * Default: every root-to-leaf path, cut after its last assistant reply. Paths that end at the same
      reply, or at a reply that a longer thread continues, give one thread: there is exactly one thread
      per assistant message with no assistant message below it.
    * `top_k`: the same, but a thread only goes through assistant replies ranked among the k best of
      their siblings (`top_k=1`: the best reply at every ranked level, all prompter branches).
    * `best_path`: a single thread following the best-ranked reply at every level (the first reply where
      prompter replies branch), ending after its last assistant reply.
    """
    if tree.prompt is None:
        return
    if best_path:
        path: Thread = [tree.prompt]
        while (nxt := _best_reply(path[-1])) is not None:
            path.append(nxt)
        if thread := _until_last_assistant(path):
            yield thread
        return
    threads: list[Thread] = []
    continued: set[str] = set()  # assistant replies that a thread continues past
    stack: list[Thread] = [[tree.prompt]]
    while stack:
        path = stack.pop()
        replies = _top_k_replies(path[-1], top_k)
        if replies:
            stack.extend([*path, r] for r in reversed(replies))
            continue
        thread = _until_last_assistant(path)
        if thread:
            threads.append(thread)
        continued.update(m.message_id for m in thread[:-1] if m.role == "assistant")
    seen: set[str] = set()
    for thread in threads:
        last = thread[-1].message_id
        if last not in continued and last not in seen:
            seen.add(last)
            yield thread


def ranked_groups(tree: ExportMessageTree, *, min_replies: int = 2) -> Iterator[tuple[Thread, Thread]]:
    """Yield (thread up to a prompter message, its ranked assistant replies best first).

    Only messages with at least `min_replies` ranked replies give a group; unranked siblings are left out.
    """
    if tree.prompt is None:
        return
    stack: list[Thread] = [[tree.prompt]]
    while stack:
        path = stack.pop()
        replies = path[-1].replies or []
        if path[-1].role == "prompter":
            ranked = _ranked([r for r in replies if r.role == "assistant"])
            if len(ranked) >= min_replies:
                yield path, ranked
        stack.extend([*path, r] for r in reversed(replies))


def dpo_pairs(
    tree: ExportMessageTree, *, pairing: Pairing = "all"
) -> Iterator[tuple[Thread, ExportMessageNode, ExportMessageNode]]:
    """Yield (prompt thread, chosen, rejected) from the ranked groups of a tree; chosen ranks better.

    `pairing="all"`: every pair of a group (K replies give K(K-1)/2 pairs); `"best"`: the best reply
    against each of the others (K-1 pairs). Equal ranks give no pair.
    """
    for prompt, replies in ranked_groups(tree):
        for i, chosen in enumerate(replies[:1] if pairing == "best" else replies):
            for rejected in replies[i + 1 :]:
                if (chosen.rank or 0) < (rejected.rank or 0):
                    yield prompt, chosen, rejected


def rl_prompts(tree: ExportMessageTree) -> Iterator[Thread]:
    """Yield every thread of a tree that ends with a prompter message: the prompts RL answers."""
    if tree.prompt is None:
        return
    stack: list[Thread] = [[tree.prompt]]
    while stack:
        path = stack.pop()
        if path[-1].role == "prompter":
            yield path
        stack.extend([*path, r] for r in reversed(path[-1].replies or []))


# --- records ---------------------------------------------------------------------------------------


def to_messages(thread: Iterable[ExportMessageNode]) -> list[dict[str, str]]:
    """The OpenAI-style messages of a thread: prompter → "user", assistant → "assistant"."""
    return [{"role": "user" if m.role == "prompter" else "assistant", "content": m.text} for m in thread]


def _meta(tree: ExportMessageTree) -> dict[str, str]:
    lang = (tree.prompt.lang if tree.prompt else None) or UNKNOWN_LANG
    meta = {"tree_id": tree.message_tree_id, "lang": lang}
    if tree.split_group:
        meta["split_group"] = tree.split_group
    return meta


def sft_records(
    trees: Iterable[ExportMessageTree],
    tree_filter: TreeFilter | None = None,
    *,
    top_k: int | None = None,
    best_path: bool = False,
) -> Iterator[Record]:
    """SFT records of the trees that pass the filter (see `sft_threads` for top_k and best_path)."""
    for tree in filter_trees(trees, tree_filter or TreeFilter()):
        for thread in sft_threads(tree, top_k=top_k, best_path=best_path):
            yield {"messages": to_messages(thread), **_meta(tree)}


def rm_records(
    trees: Iterable[ExportMessageTree], tree_filter: TreeFilter | None = None, *, min_replies: int = 2
) -> Iterator[Record]:
    """Reward-model groups: a prompt and the texts of its ranked replies, best first."""
    for tree in filter_trees(trees, tree_filter or TreeFilter()):
        for prompt, replies in ranked_groups(tree, min_replies=min_replies):
            yield {"prompt": to_messages(prompt), "replies": [r.text for r in replies], **_meta(tree)}


def dpo_records(
    trees: Iterable[ExportMessageTree], tree_filter: TreeFilter | None = None, *, pairing: Pairing = "all"
) -> Iterator[Record]:
    """DPO preference pairs (see `dpo_pairs`)."""
    for tree in filter_trees(trees, tree_filter or TreeFilter()):
        for prompt, chosen, rejected in dpo_pairs(tree, pairing=pairing):
            yield {
                "prompt": to_messages(prompt),
                "chosen": to_messages([chosen]),
                "rejected": to_messages([rejected]),
                **_meta(tree),
            }


def rl_records(trees: Iterable[ExportMessageTree], tree_filter: TreeFilter | None = None) -> Iterator[Record]:
    """RL prompts: every thread that ends with a prompter message."""
    for tree in filter_trees(trees, tree_filter or TreeFilter()):
        for prompt in rl_prompts(tree):
            yield {"prompt": to_messages(prompt), **_meta(tree)}


def extract(
    trees: Iterable[ExportMessageTree],
    kind: Kind,
    tree_filter: TreeFilter | None = None,
    *,
    top_k: int | None = None,
    best_path: bool = False,
    pairing: Pairing = "all",
) -> Iterator[Record]:
    """Records of one kind; options that do not apply to the kind are refused, not ignored."""
    if kind != "sft" and (top_k is not None or best_path):
        raise ValueError("top_k and best_path apply to SFT threads only")
    if kind != "dpo" and pairing != "all":
        raise ValueError("pairing applies to DPO pairs only")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1, not {top_k}")
    if kind == "sft":
        return sft_records(trees, tree_filter, top_k=top_k, best_path=best_path)
    if kind == "rm":
        return rm_records(trees, tree_filter)
    if kind == "dpo":
        return dpo_records(trees, tree_filter, pairing=pairing)
    if kind == "rl":
        return rl_records(trees, tree_filter)
    raise ValueError(f"unknown record kind {kind!r}; use one of {', '.join(KINDS)}")


# --- train / validation split ----------------------------------------------------------------------


def split_key(item: Record | ExportMessageTree) -> str:
    """What decides a record's or tree's side of a split: its `split_group` if it has one, else its
    tree id."""
    if isinstance(item, ExportMessageTree):
        return item.split_group or item.message_tree_id
    return str(item.get("split_group") or item["tree_id"])


def split_of(tree_id: str, val_fraction: float, seed: int = 0) -> Split:
    """The side of the split a tree falls on: "validation" for about `val_fraction` of all trees.

    A keyed hash of the tree id decides, so the answer is the same for every record of a tree, every
    run, and every file the tree appears in, and changes with the seed.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, not {val_fraction}")
    digest = hashlib.sha256(f"{seed}\x00{tree_id}".encode()).digest()
    return "validation" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def split_records(
    records: Iterable[Record], val_fraction: float, seed: int = 0
) -> tuple[list[Record], list[Record]]:
    """Split records into (train, validation) by their `tree_id` (or `split_group`), so no tree is on
    both sides."""
    train: list[Record] = []
    validation: list[Record] = []
    for record in records:
        side = split_of(split_key(record), val_fraction, seed)
        (validation if side == "validation" else train).append(record)
    return train, validation
