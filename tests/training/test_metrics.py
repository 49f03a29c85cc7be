"""Ranking metrics and win rates, against hand computations (and scipy when it is installed)."""

from __future__ import annotations

import math
import random

import pytest

from oasst.training.metrics import (
    average_ranks,
    best_worst_accuracy,
    kendall_tau,
    pairwise_accuracy,
    ranking_metrics,
    spearman_rho,
    win_rate,
)


def test_average_ranks_share_ties() -> None:
    assert average_ranks([10.0, 30.0, 20.0]) == [1.0, 3.0, 2.0]
    assert average_ranks([5.0, 1.0, 5.0, 0.0]) == [3.5, 2.0, 3.5, 1.0]


def test_kendall_tau_by_hand() -> None:
    # pairs of [1,2,3] vs [1,3,2]: (0,1) concordant, (0,2) concordant, (1,2) discordant -> (2-1)/3
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # tau-b with a tie in x: C=2, D=0, ties_x=1 -> 2 / sqrt(2 * 3)
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    assert kendall_tau([4, 4, 4], [1, 2, 3]) == 0.0  # no order at all


def test_spearman_rho_by_hand() -> None:
    # 1 - 6 * sum(d^2) / (n (n^2 - 1)) with d = (0, 1, 1)
    assert spearman_rho([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert spearman_rho([10, 20, 30, 40], [1, 2, 3, 4]) == pytest.approx(1.0)
    assert spearman_rho([2, 2], [1, 2]) == 0.0


def test_pairwise_and_best_worst_accuracy() -> None:
    # best first: (0,1) right, (0,2) right, (1,2) wrong
    assert pairwise_accuracy([3.0, 1.0, 2.0]) == pytest.approx(2 / 3)
    assert pairwise_accuracy([1.0, 1.0]) == 0.5
    assert best_worst_accuracy([3.0, 1.0, 2.0]) == 1.0
    assert best_worst_accuracy([0.0, 1.0, -1.0, 2.0]) == 0.0
    with pytest.raises(ValueError, match="two replies"):
        pairwise_accuracy([1.0])


def test_ranking_metrics_perfect_reversed_and_averaged() -> None:
    perfect = ranking_metrics([[3.0, 2.0, 1.0], [1.0, 0.0]])
    assert perfect["accuracy"] == perfect["kendall_tau"] == perfect["spearman_rho"] == 1.0
    assert perfect["score_diff"] == pytest.approx(((3 - 1) + (1 - 0)) / 2)
    reversed_ = ranking_metrics([[1.0, 2.0, 3.0]])
    assert reversed_["accuracy"] == 0.0
    assert reversed_["kendall_tau"] == reversed_["spearman_rho"] == -1.0
    # averaged per group, not per pair: a 3-reply group at 2/3 and a 2-reply group at 0
    mixed = ranking_metrics([[3.0, 1.0, 2.0], [0.0, 1.0]])
    assert mixed["accuracy"] == pytest.approx((2 / 3 + 0) / 2)
    assert mixed["groups"] == 2


def test_against_scipy() -> None:
    from scipy import stats

    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(2, 7)
        x = [float(rng.randint(0, 4)) for _ in range(n)]  # ties on purpose
        y = [float(rng.randint(0, 4)) for _ in range(n)]
        if len(set(x)) < 2 or len(set(y)) < 2:
            continue
        assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)
        assert spearman_rho(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)


def test_win_rate_counts_ties_half_with_an_interval() -> None:
    same = win_rate([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same.rate == 0.5 and same.ties == 3 and same.low == same.high == 0.5
    result = win_rate([2.0, 2.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0])
    assert (result.wins, result.ties, result.losses) == (2, 1, 1)
    assert result.rate == pytest.approx((2 + 0.5) / 4)
    assert 0.0 <= result.low <= result.rate <= result.high <= 1.0
    many = win_rate([1.0] * 40 + [0.0] * 10, [0.5] * 50)
    assert many.rate == pytest.approx(0.8)
    assert 0.5 < many.low < 0.8 < many.high < 1.0  # 50 prompts are enough to call it
    with pytest.raises(ValueError, match="paired"):
        win_rate([1.0], [1.0, 2.0])
