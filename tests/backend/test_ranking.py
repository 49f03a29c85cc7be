"""Merging rankings with Tideman's ranked pairs, as the original backend does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oasst.backend.services.ranking import merge_rankings, ranked_pairs


def test_full_tie_breaks_by_sorted_id() -> None:
    assert ranked_pairs([["a", "b"], ["b", "a"]]) == ["a", "b"]
    assert ranked_pairs([["b", "a"], ["a", "b"]]) == ["a", "b"]


def test_condorcet_cycle_drops_the_weakest_pair() -> None:
    assert ranked_pairs([list("abc"), list("bca"), list("cab")]) == ["a", "b", "c"]


def test_condorcet_winner_comes_first() -> None:
    # c beats a (2:1) and b (2:1) head to head although it is first on only one ballot
    assert ranked_pairs([list("cab"), list("acb"), list("bca")])[0] == "c"


def test_strongest_majority_is_locked_first() -> None:
    # a>b by 3, b>c by 1, c>a by 1: the a>b margin is locked first, then b>c; c>a would close a cycle
    ballots = [list("abc"), list("abc"), list("cab"), list("bca"), list("cab")]
    assert ranked_pairs(ballots) == ["a", "b", "c"]


def test_single_ballot_and_empty_input() -> None:
    assert ranked_pairs([[3, 1, 2]]) == [3, 1, 2]
    assert ranked_pairs([]) == []


def test_ballots_over_different_candidates_are_rejected() -> None:
    with pytest.raises(ValueError, match="same candidates"):
        ranked_pairs([["a", "b"], ["a", "c"]])


def test_merge_restricts_ballots_to_common_ids() -> None:
    # "x" was ranked before it was deleted, "y" was added later: both are left out
    ballots = [["x", "b", "a"], ["b", "a", "y"], ["a", "b"]]
    assert merge_rankings(ballots) == ["b", "a"]


def test_merge_needs_two_common_ids() -> None:
    assert merge_rankings([["a", "b"], ["a", "c"]]) is None
    assert merge_rankings([["a"]]) is None
    assert merge_rankings([]) is None


def test_merge_keeps_a_repeated_ids_best_place() -> None:
    assert merge_rankings([["b", "a", "b"], ["b", "a"]]) == ["b", "a"]


ids = st.lists(st.text("abcdef0123", min_size=1, max_size=4), min_size=2, max_size=6, unique=True)


@st.composite
def elections(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    """Common candidates plus ballots that may each mention extra, non-common ids."""
    common = draw(ids)
    count = draw(st.integers(min_value=1, max_value=7))
    ballots = []
    for n in range(count):
        # ids only one ballot mentions (a lone ballot's ids are all common, so it gets none)
        choices = [f"extra{n}", f"other{n}"] if count > 1 else []
        extra = draw(st.lists(st.sampled_from(choices), max_size=2, unique=True)) if choices else []
        ballots.append(draw(st.permutations(common + extra)))
    return common, ballots


@given(elections())
def test_merge_is_a_permutation_of_the_common_ids(election: tuple[list[str], list[list[str]]]) -> None:
    common, ballots = election
    result = merge_rankings(ballots)
    assert result is not None
    assert sorted(result) == sorted(common)


@given(elections())
def test_first_on_every_ballot_comes_first(election: tuple[list[str], list[list[str]]]) -> None:
    common, ballots = election
    restricted = [[i for i in b if i in common] for b in ballots]
    winner = restricted[0][0]
    ballots = [[winner, *(i for i in b if i != winner)] for b in ballots]
    result = merge_rankings(ballots)
    assert result is not None and result[0] == winner


@given(ids, st.integers(min_value=1, max_value=5))
def test_unanimous_ballots_return_that_order(order: list[str], count: int) -> None:
    assert merge_rankings([list(order) for _ in range(count)]) == order


@given(elections())
def test_condorcet_winner_when_there_is_one_comes_first(election: tuple[list[str], list[list[str]]]) -> None:
    common, ballots = election
    restricted = [[i for i in b if i in common] for b in ballots]

    def beats(x: str, y: str) -> bool:
        return sum(b.index(x) < b.index(y) for b in restricted) * 2 > len(restricted)

    winners = [c for c in common if all(beats(c, o) for o in common if o != c)]
    result = merge_rankings(ballots)
    assert result is not None
    if winners:
        assert result[0] == winners[0]
