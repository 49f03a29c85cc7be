"""What an export holds, and how many training examples it yields, in one streaming pass."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from oasst.data import ExportMessageTree, iter_messages
from oasst.training.datasets import (
    Pairing,
    TreeFilter,
    dpo_pairs,
    prune_tree,
    ranked_groups,
    rl_prompts,
    sft_threads,
)

__all__ = ["ExportStats", "export_stats"]


@dataclass
class ExportStats:
    """Counts over a whole export, and the training examples of the trees that pass a filter."""

    trees: int = 0
    messages: int = 0
    langs: Counter[str] = field(default_factory=Counter)
    """Messages per language (of each message)."""
    roles: Counter[str] = field(default_factory=Counter)
    states: Counter[str] = field(default_factory=Counter)
    """Trees per state."""
    ranked_groups: int = 0
    """Prompter messages with at least two ranked replies, in the whole export."""
    usable_trees: int = 0
    """Trees that pass the filter; the counts below are theirs."""
    sft_threads: int = 0
    rm_groups: int = 0
    dpo_pairs: int = 0
    rl_prompts: int = 0

    def add(
        self,
        tree: ExportMessageTree,
        tree_filter: TreeFilter,
        *,
        top_k: int | None = None,
        best_path: bool = False,
        pairing: Pairing = "all",
    ) -> None:
        """Count one tree."""
        self.trees += 1
        self.states[tree.tree_state or "unknown"] += 1
        for message in iter_messages(tree):
            self.messages += 1
            self.langs[message.lang or "und"] += 1
            self.roles[message.role] += 1
        self.ranked_groups += sum(1 for _ in ranked_groups(tree))
        pruned = prune_tree(tree, tree_filter)
        if pruned is None:
            return
        self.usable_trees += 1
        self.sft_threads += sum(1 for _ in sft_threads(pruned, top_k=top_k, best_path=best_path))
        self.rm_groups += sum(1 for _ in ranked_groups(pruned))
        self.dpo_pairs += sum(1 for _ in dpo_pairs(pruned, pairing=pairing))
        self.rl_prompts += sum(1 for _ in rl_prompts(pruned))


def export_stats(
    trees: Iterable[ExportMessageTree],
    tree_filter: TreeFilter | None = None,
    *,
    top_k: int | None = None,
    best_path: bool = False,
    pairing: Pairing = "all",
) -> ExportStats:
    """Count an export's trees and messages, and the SFT threads, RM groups, DPO pairs and RL prompts
    that the trees passing `tree_filter` give (default filter: ready_for_export, nothing deleted,
    rejected or synthetic)."""
    stats = ExportStats()
    tree_filter = tree_filter or TreeFilter()
    for tree in trees:
        stats.add(tree, tree_filter, top_k=top_k, best_path=best_path, pairing=pairing)
    return stats
