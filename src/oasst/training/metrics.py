"""Ranking metrics for reward models, and the win rate of one model over another, in plain Python/numpy.

A reward model is judged on groups of replies to one prompt that people ranked, best first. For each
group its scores are compared with the human order:

* pairwise accuracy: the share of the group's K(K-1)/2 pairs whose better reply scores higher (a tie
  counts half);
* best-vs-worst accuracy: whether the best reply outscores the worst (the original Open Assistant's
  ``accuracy``);
* Kendall's tau-b and Spearman's rho between the scores and the human ranks.

Each is computed per group and averaged over groups, so every prompt weighs the same however many
replies it has. A group whose scores are all equal has no order: its tau and rho count as 0, where
scipy would say nan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "WinRate",
    "average_ranks",
    "best_worst_accuracy",
    "kendall_tau",
    "pairwise_accuracy",
    "ranking_metrics",
    "spearman_rho",
    "win_rate",
]


def average_ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n of ``values`` (1 = smallest); tied values share the average of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either variable corrected for); 0.0 when either is constant."""
    if len(x) != len(y):
        raise ValueError("x and y must have the same length")
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denominator if denominator else 0.0


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson's correlation of the average ranks; 0.0 when either is constant."""
    if len(x) != len(y):
        raise ValueError("x and y must have the same length")
    rx, ry = np.asarray(average_ranks(x)), np.asarray(average_ranks(y))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum()) / denominator if denominator else 0.0


def pairwise_accuracy(scores_best_first: Sequence[float]) -> float:
    """Share of pairs (i better than j, i.e. i < j) with ``score[i] > score[j]``; ties count half."""
    s = scores_best_first
    pairs = [(i, j) for i in range(len(s)) for j in range(i + 1, len(s))]
    if not pairs:
        raise ValueError("a group needs at least two replies")
    return sum(1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0 for i, j in pairs) / len(pairs)


def best_worst_accuracy(scores_best_first: Sequence[float]) -> float:
    """1.0 when the best reply outscores the worst, 0.5 on a tie, else 0.0."""
    if len(scores_best_first) < 2:
        raise ValueError("a group needs at least two replies")
    best, worst = scores_best_first[0], scores_best_first[-1]
    return 1.0 if best > worst else 0.5 if best == worst else 0.0


def ranking_metrics(groups: Sequence[Sequence[float]]) -> dict[str, float]:
    """Every metric above averaged over groups (each a list of scores, best reply first), plus the mean
    score of the best and the worst replies and their difference."""
    if not groups:
        raise ValueError("no groups to evaluate")
    rows: dict[str, list[float]] = {
        k: [] for k in ("accuracy", "best_worst_accuracy", "kendall_tau", "spearman_rho")
    }
    best_scores, worst_scores = [], []
    for scores in groups:
        human = list(range(len(scores), 0, -1))  # higher is better, like the scores
        rows["accuracy"].append(pairwise_accuracy(scores))
        rows["best_worst_accuracy"].append(best_worst_accuracy(scores))
        rows["kendall_tau"].append(kendall_tau(scores, human))
        rows["spearman_rho"].append(spearman_rho(scores, human))
        best_scores.append(scores[0])
        worst_scores.append(scores[-1])
    result = {k: float(np.mean(v)) for k, v in rows.items()}
    result["best_score"] = float(np.mean(best_scores))
    result["worst_score"] = float(np.mean(worst_scores))
    result["score_diff"] = result["best_score"] - result["worst_score"]
    result["groups"] = float(len(groups))
    return result


@dataclass(frozen=True)
class WinRate:
    """How often A beat B (ties count half), with a percentile-bootstrap confidence interval."""

    rate: float
    low: float
    high: float
    wins: int
    ties: int
    losses: int
    confidence: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def win_rate(
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> WinRate:
    """Win rate of A over B from paired scores (one pair per prompt): A wins where its score is higher."""
    if len(scores_a) != len(scores_b):
        raise ValueError("scores_a and scores_b must be paired: one score of each per prompt")
    if not scores_a:
        raise ValueError("no scores to compare")
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    outcomes = np.where(a > b, 1.0, np.where(a == b, 0.5, 0.0))
    rng = np.random.default_rng(seed)
    means = outcomes[rng.integers(0, len(outcomes), size=(resamples, len(outcomes)))].mean(axis=1)
    tail = (1 - confidence) / 2
    return WinRate(
        rate=float(outcomes.mean()),
        low=float(np.quantile(means, tail)),
        high=float(np.quantile(means, 1 - tail)),
        wins=int((outcomes == 1.0).sum()),
        ties=int((outcomes == 0.5).sum()),
        losses=int((outcomes == 0.0).sum()),
        confidence=confidence,
    )
