"""Merging users' rankings of sibling replies into one consensus order (Tideman's ranked pairs).

Pure functions, no database: the tree manager collects the ballots (each one user's `ranked_message_ids`,
best first) and writes `rank = position` (0 = best) from the result. Results match the original backend,
including its deterministic tie-breaking by sorted id, so re-ranking an imported tree gives the same
ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

__all__ = ["merge_rankings", "ranked_pairs"]


class _Comparable(Protocol):
    def __lt__(self, other: Any, /) -> bool: ...


T = TypeVar("T", bound=_Comparable)


def _margins(ballots: Sequence[Sequence[T]], names: list[T]) -> list[list[int]]:
    """margins[i][j] = ballots ranking names[i] above names[j] minus those ranking it below."""
    index = {name: i for i, name in enumerate(names)}
    n = len(names)
    margins = [[0] * n for _ in range(n)]
    for ballot in ballots:
        positions = [index[name] for name in ballot]
        for above, i in enumerate(positions):
            for j in positions[above + 1 :]:
                margins[i][j] += 1
                margins[j][i] -= 1
    return margins


def _reaches(edges: list[set[int]], start: int, goal: int) -> bool:
    seen = {start}
    stack = [start]
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        for nxt in edges[node] - seen:
            seen.add(nxt)
            stack.append(nxt)
    return False


def ranked_pairs(ballots: Sequence[Sequence[T]]) -> list[T]:
    """Return the ranked-pairs consensus of `ballots`, best first.

    Every ballot must order the same candidates, best first. Pairs whose margin is >= 0 are locked in
    from the largest margin down (a tie contributes both directions; equal margins go in sorted-id
    order, which makes ties deterministic), skipping any pair that would close a cycle. The locked
    pairs then order every candidate: a full tie `[[a, b], [b, a]]` gives `[a, b]`, and the Condorcet
    cycle `abc / bca / cab` gives `[a, b, c]`.
    """
    if not ballots:
        return []
    names = sorted(set(ballots[0]))
    for ballot in ballots:
        if len(ballot) != len(names) or set(ballot) != set(names):
            raise ValueError("every ballot must rank the same candidates, each exactly once")
    margins = _margins(ballots, names)
    n = len(names)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j and margins[i][j] >= 0]
    pairs.sort(key=lambda pair: -margins[pair[0]][pair[1]])  # stable: equal margins keep (i, j) order
    beats: list[set[int]] = [set() for _ in range(n)]
    for winner, loser in pairs:
        if not _reaches(beats, loser, winner):
            beats[winner].add(loser)
    # Every pair of candidates is now ordered (directly or through others) with no cycle, so the
    # number of candidates each one transitively beats is distinct and gives its position.
    beaten = [sum(_reaches(beats, i, j) for j in range(n) if j != i) for i in range(n)]
    return [names[i] for i in sorted(range(n), key=lambda i: -beaten[i])]


def merge_rankings(ballots: Sequence[Sequence[str]]) -> list[str] | None:
    """Merge ballots over message ids into one order (best first), or None if there is nothing to merge.

    Replies can be added or deleted between two users' rankings, so ballots need not cover the same ids:
    each is restricted to the ids common to all of them (keeping its order, and a repeated id's first,
    best, place). With fewer than two common ids there is no order to decide and None is returned; the
    original returned None here too and one caller crashed on it, so callers must handle it.
    """
    if not ballots:
        return None
    common = set(ballots[0]).intersection(*ballots[1:])
    if len(common) < 2:
        return None
    restricted = [[i for i in dict.fromkeys(ballot) if i in common] for ballot in ballots]
    return ranked_pairs(restricted)
