"""The tree lifecycle's gates, end to end through the services (both databases)."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from oasst.backend.db import Database
from oasst.backend.models import Message, MessageReaction, MessageTreeState, TextLabels, TreeState, UserStats
from oasst.backend.services import tree_manager
from oasst.backend.settings import TreeManagerConfiguration
from tests.backend.factories import client_for_key, make_db_user, make_message, make_tree, make_tree_state
from tests.backend.volunteers import Volunteer
from tests.conftest import Keys

CFG = TreeManagerConfiguration(p_activate_backlog_tree=0.0)


def state_of(database: Database, tree_id: uuid.UUID) -> str:
    return database.read(lambda s: s.get(MessageTreeState, tree_id).state)  # type: ignore[union-attr]


def ballot(
    session: Session,
    client_id: uuid.UUID,
    user_id: uuid.UUID,
    parent: Message,
    order: list[Message],
    *,
    not_rankable: bool = False,
) -> None:
    for m in order:
        m.ranking_count += 1
    session.add(
        MessageReaction(
            task_id=uuid.uuid4(),
            user_id=user_id,
            payload_type="RankingReactionPayload",
            payload={
                "ranked_message_ids": [str(m.id) for m in order],
                "ranking_parent_id": str(parent.id),
                "not_rankable": not_rankable,
            },
            api_client_id=client_id,
            message_id=parent.id,
        )
    )
    session.flush()


def ranking_tree(session: Session, keys: Keys) -> tuple[Any, list[Any]]:
    client = client_for_key(session, keys.trusted)
    users = [make_db_user(session, client) for _ in range(4)]
    tree = make_tree(session, client, users[0], state=TreeState.RANKING, shape=[[], []])
    return tree, [client, *users]


@pytest.mark.parametrize(
    ("flags", "expected_best"),
    [((False, True, True), 1), ((True, True, True), None)],
    ids=["not-rankable-ballots-left-out", "all-not-rankable"],
)
def test_not_rankable_ballots_count_but_do_not_vote(
    database: Database, keys: Keys, flags: tuple[bool, ...], expected_best: int | None
) -> None:
    def work(session: Session) -> tuple[uuid.UUID, list[uuid.UUID]]:
        tree, (client, *users) = ranking_tree(session, keys)
        a, b = tree.at(0), tree.at(1)
        orders = [[b, a], [a, b], [a, b]]  # counted alone, the two not_rankable ballots would make `a` win
        for user, order, flag in zip(users[1:], orders, flags, strict=True):
            ballot(session, client.id, user.id, tree.root, order, not_rankable=flag)
        tree_manager.check_condition_for_scoring_state(session, tree.state, CFG)
        return tree.id, [a.id, b.id]

    tree_id, ids = database.write(work)
    assert state_of(database, tree_id) == TreeState.READY_FOR_EXPORT
    ranks = database.read(lambda s: [s.get(Message, i).rank for i in ids])  # type: ignore[union-attr]
    if expected_best is None:
        assert ranks == [None, None]
    else:
        assert ranks[expected_best] == 0


def test_scoring_waits_for_the_required_rankings(database: Database, keys: Keys) -> None:
    def work(session: Session) -> uuid.UUID:
        tree, (client, *users) = ranking_tree(session, keys)
        ballot(session, client.id, users[1].id, tree.root, [tree.at(1), tree.at(0)])
        tree_manager.check_condition_for_scoring_state(session, tree.state, CFG)
        return tree.id

    assert state_of(database, database.write(work)) == TreeState.RANKING


def test_a_tree_with_nothing_to_rank_is_exported_at_once(database: Database, keys: Keys) -> None:
    """The original left such a tree in `ranking` until the next server restart."""

    def work(session: Session) -> uuid.UUID:
        client = client_for_key(session, keys.trusted)
        users = [make_db_user(session, client) for _ in range(3)]
        tree = make_tree(session, client, users, state=TreeState.GROWING, shape=[[[]]], goal_tree_size=3)
        tree_manager.check_condition_for_ranking_state(session, tree.state, CFG)
        return tree.id

    assert state_of(database, database.write(work)) == TreeState.READY_FOR_EXPORT


def test_low_acceptance_aborts_and_high_acceptance_enters_the_lottery(database: Database, keys: Keys) -> None:
    def work(session: Session) -> tuple[uuid.UUID, uuid.UUID]:
        client = client_for_key(session, keys.trusted)
        reviewers = [make_db_user(session, client) for _ in range(3)]
        results = []
        for spam in (1.0, 0.0):
            root = make_message(session, client, make_db_user(session, client), review_result=None)
            mts = make_tree_state(session, root, state=TreeState.INITIAL_PROMPT_REVIEW)
            for r in reviewers:
                session.add(
                    TextLabels(
                        id=uuid.uuid4(),
                        task_id=uuid.uuid4(),
                        user_id=r.id,
                        api_client_id=client.id,
                        message_id=root.id,
                        labels={"spam": spam, "lang_mismatch": 0.0},
                    )
                )
                root.review_count += 1
                session.flush()
                tree_manager.after_text_labels(session, root, mts, CFG)
            results.append(root.id)
        return results[0], results[1]

    spam_tree, good_tree = database.write(work)
    assert state_of(database, spam_tree) == TreeState.ABORTED_LOW_GRADE
    assert state_of(database, good_tree) == TreeState.PROMPT_LOTTERY_WAITING
    assert database.read(lambda s: s.get(Message, spam_tree).review_result) is False  # type: ignore[union-attr]


def test_halt_and_resume(database: Database, keys: Keys) -> None:
    def make(session: Session) -> tuple[uuid.UUID, uuid.UUID]:
        client = client_for_key(session, keys.trusted)
        user = make_db_user(session, client)
        growing = make_tree(session, client, user, state=TreeState.GROWING, shape=[[]])
        in_review = make_tree(
            session, client, user, state=TreeState.INITIAL_PROMPT_REVIEW, shape=[], review_result=None
        )
        return growing.id, in_review.id

    growing, in_review = database.write(make)
    for tree_id in (growing, in_review):
        database.write(lambda s, t=tree_id: tree_manager.halt_tree(s, t, CFG))  # type: ignore[misc]
        assert state_of(database, tree_id) == TreeState.HALTED_BY_MODERATOR
        database.write(lambda s, t=tree_id: tree_manager.resume_tree(s, t, CFG))  # type: ignore[misc]
    assert state_of(database, growing) == TreeState.GROWING  # it had won the lottery
    assert state_of(database, in_review) == TreeState.INITIAL_PROMPT_REVIEW


def test_too_many_skips_halt_a_growing_tree(database: Database, keys: Keys) -> None:
    cfg = TreeManagerConfiguration(auto_mod_max_skip_reply=3)

    def work(session: Session) -> uuid.UUID:
        client = client_for_key(session, keys.trusted)
        tree = make_tree(session, client, make_db_user(session, client), state=TreeState.GROWING, shape=[[]])
        reply = tree.at(0)
        reply.emojis = {"_skip_reply": 2}
        tree_manager.auto_moderate_message(session, reply, cfg)
        assert tree.state.state == TreeState.GROWING
        reply.emojis = {"_skip_reply": 3}
        tree_manager.auto_moderate_message(session, reply, cfg)
        return tree.id

    assert state_of(database, database.write(work)) == TreeState.HALTED_BY_MODERATOR


def test_backlog_tree_is_activated_when_rankings_run_low(database: Database, keys: Keys) -> None:
    cfg = TreeManagerConfiguration(p_activate_backlog_tree=0.0, min_active_rankings_per_lang=1)

    def work(session: Session) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
        client = client_for_key(session, keys.trusted)
        user = make_db_user(session, client)
        nothing_to_rank = make_tree(session, client, user, state=TreeState.BACKLOG_RANKING, shape=[[]])
        rankable = make_tree(session, client, user, state=TreeState.BACKLOG_RANKING, shape=[[], []])
        nothing_to_rank.state.created_date = rankable.state.created_date.replace(year=2020)  # tried first
        ending = make_tree(session, client, user, state=TreeState.GROWING, shape=[[]])
        session.flush()
        tree_manager.halt_tree(session, ending.id, cfg)  # an active tree stops
        return nothing_to_rank.id, rankable.id, ending.id

    nothing_to_rank, rankable, _ = database.write(work)
    assert state_of(database, nothing_to_rank) == TreeState.ABORTED_LOW_GRADE
    assert state_of(database, rankable) == TreeState.RANKING


def test_lottery_weights_authors_by_first_ranked_replies(
    database: Database, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[list[Any], list[int]]] = []
    real_choices = random.choices

    def spy(population: list[Any], weights: list[int], **kw: Any) -> list[Any]:
        seen.append((list(population), list(weights)))
        return real_choices(population, weights=weights, **kw)

    monkeypatch.setattr(tree_manager.random, "choices", spy)

    def work(session: Session) -> tuple[uuid.UUID, uuid.UUID]:
        client = client_for_key(session, keys.trusted)
        star, newcomer = make_db_user(session, client), make_db_user(session, client)
        session.add(UserStats(time_frame="month", user_id=star.id, reply_ranked_1=9))
        for author in (star, newcomer):
            make_tree(session, client, author, state=TreeState.PROMPT_LOTTERY_WAITING, shape=[])
        activated = tree_manager.prompt_lottery(
            session, "en", TreeManagerConfiguration(max_active_trees=1), max_activate=2
        )
        assert activated >= 0
        return star.id, newcomer.id

    star, newcomer = database.write(work)
    weights = dict(zip(*seen[0], strict=True))
    assert weights == {star: 10, newcomer: 1}
    growing = database.read(
        lambda s: s.scalars(select(MessageTreeState).where(MessageTreeState.state == TreeState.GROWING)).all()
    )
    assert len(growing) == 1  # capped by max_active_trees


def test_disabled_initial_prompt_languages_get_no_prompt_tasks(
    app_client: TestClient, database: Database
) -> None:
    app_client.app.state.settings.tree_manager.init_prompt_disabled_langs = "de"  # type: ignore[attr-defined]
    volunteer = Volunteer(app_client, "writer", lang="de")
    volunteer.accept_tos()
    response = volunteer.request("initial_prompt")
    assert response.status_code == 503 and response.json()["error_code"] == 1006
    availability = app_client.post(
        "/api/v1/tasks/availability", params={"lang": "de"}, json=volunteer.user
    ).json()
    assert availability["initial_prompt"] == 0
    assert Volunteer(app_client, "writer", lang="fr").request("initial_prompt").status_code == 200
