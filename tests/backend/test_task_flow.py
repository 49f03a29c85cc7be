"""The whole task protocol through HTTP: a tree goes from a prompt to ready_for_export."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from oasst.backend.app import create_app
from oasst.backend.db import Database
from oasst.backend.models import Message, MessageEmoji, MessageTreeState, Task
from tests.backend.volunteers import Volunteer
from tests.conftest import Keys, make_test_settings

SMALL_TREES = {
    "goal_tree_size": 3,
    "num_reviews_initial_prompt": 1,
    "num_reviews_reply": 1,
    "num_required_rankings": 1,
    "max_active_trees": 1,
    "max_children_count": 2,
    "max_tree_depth": 2,
    "p_activate_backlog_tree": 0.0,
}


@pytest.fixture
def small_client(database_url: str, database: Database, keys: Keys) -> Iterator[TestClient]:
    # ToS acceptance has its own test below; here volunteers go straight to work
    settings = make_test_settings(
        database_url, tree_manager=SMALL_TREES, enforce_tos_acceptance=False, rate_limits={"enabled": False}
    )
    app = create_app(settings, database=database, migrate=False)
    with TestClient(app, headers={"X-API-Key": keys.trusted}) as client:
        yield client


def tree_states(database: Database) -> dict[str, str]:
    rows = database.read(
        lambda s: s.execute(select(MessageTreeState.message_tree_id, MessageTreeState.state)).all()
    )
    return {str(t): state for t, state in rows}


def test_tree_reaches_ready_for_export(small_client: TestClient, database: Database) -> None:
    team = [Volunteer(small_client, f"vol{i}") for i in range(4)]
    assert team[0].work_once("initial_prompt")["type"] == "initial_prompt"
    assert list(tree_states(database).values()) == ["initial_prompt_review"]

    review = team[1].work_once("label_initial_prompt")
    assert review is not None and review["type"] == "label_initial_prompt"
    assert list(tree_states(database).values()) == ["prompt_lottery_waiting"]  # accepted

    # every task request runs the prompt lottery first, so the prompt is growing when the reply is asked for
    assert team[2].work_once("assistant_reply")["type"] == "assistant_reply"
    assert list(tree_states(database).values()) == ["growing"]

    (first_tree,) = tree_states(database)
    for _ in range(30):
        if tree_states(database)[first_tree] == "ready_for_export":
            break
        for v in team:
            v.work_once("random")
    assert tree_states(database)[first_tree] == "ready_for_export"

    messages = database.read(
        lambda s: s.scalars(select(Message).where(Message.message_tree_id == uuid.UUID(first_tree))).all()
    )
    assert len([m for m in messages if m.review_result]) == 3
    siblings: dict[uuid.UUID, list[Message]] = {}
    for m in messages:
        if m.parent_id is not None and m.review_result and m.role == "assistant":
            siblings.setdefault(m.parent_id, []).append(m)
    for replies in siblings.values():  # every set of assistant siblings got a consensus rank
        expected = list(range(len(replies))) if len(replies) > 1 else [None]
        assert sorted(r.rank for r in replies) == expected  # type: ignore[type-var]


def test_self_review_is_never_offered(small_client: TestClient) -> None:
    author, other = Volunteer(small_client, "author"), Volunteer(small_client, "other")
    author.work_once("initial_prompt")
    response = author.request("label_initial_prompt")
    assert response.status_code == 503
    assert response.json()["error_code"] == 1006
    assert other.request("label_initial_prompt").status_code == 200


def test_tos_is_enforced(app_client: TestClient) -> None:
    stranger = Volunteer(app_client, "stranger")
    response = stranger.request("initial_prompt")
    assert response.status_code == 451
    assert response.json()["error_code"] == 4003
    stranger.accept_tos()
    assert stranger.request("initial_prompt").status_code == 200


def test_nack_hides_the_item_from_that_user(small_client: TestClient, database: Database) -> None:
    author, reviewer = Volunteer(small_client, "a"), Volunteer(small_client, "r")
    author.work_once("initial_prompt")
    task = reviewer.request("label_initial_prompt").json()
    response = small_client.post(f"/api/v1/tasks/{task['id']}/nack", json={"reason": "not my language"})
    assert response.status_code == 204
    assert reviewer.request("label_initial_prompt").json()["error_code"] == 1006
    skipped = database.read(lambda s: s.scalars(select(Task).where(Task.skipped.is_(True))).all())
    assert [t.skip_reason for t in skipped] == ["not my language"]


def test_release_gives_a_task_back_without_hiding_its_item(
    small_client: TestClient, database: Database
) -> None:
    author, reviewer = Volunteer(small_client, "a"), Volunteer(small_client, "r")
    author.work_once("initial_prompt")
    task = reviewer.request("label_initial_prompt").json()
    body = {"reason": "left unfinished", "release": True}
    assert small_client.post(f"/api/v1/tasks/{task['id']}/nack", json=body).status_code == 204
    again = reviewer.request("label_initial_prompt").json()
    assert again["type"] == "label_initial_prompt" and again["id"] != task["id"]
    assert again["message_id"] == task["message_id"]  # the same prompt, still offered to them
    assert database.read(lambda s: s.scalars(select(MessageEmoji)).all()) == []  # nobody's skip


def test_a_held_task_can_be_fetched_again_until_it_is_skipped(small_client: TestClient) -> None:
    author, reviewer = Volunteer(small_client, "a"), Volunteer(small_client, "r")
    author.work_once("initial_prompt")
    task = reviewer.request("label_initial_prompt").json()
    # the reviewer holds the only prompt: asking again finds nothing, fetching the held task shows it
    assert reviewer.request("label_initial_prompt").json()["error_code"] == 1006
    again = small_client.get(f"/api/v1/tasks/{task['id']}")
    assert again.status_code == 200 and again.json() == task
    small_client.post(f"/api/v1/tasks/{task['id']}/nack", json={"reason": "later"})
    gone = small_client.get(f"/api/v1/tasks/{task['id']}")
    assert (gone.status_code, gone.json()["error_code"]) == (400, 2109)
    missing = small_client.get(f"/api/v1/tasks/{uuid.uuid4()}")
    assert (missing.status_code, missing.json()["error_code"]) == (404, 2100)


def test_task_conversations_show_the_readers_own_emojis(small_client: TestClient) -> None:
    author, reader = Volunteer(small_client, "author"), Volunteer(small_client, "reader")
    author.work_once("initial_prompt")
    prompt = reader.request("label_initial_prompt").json()
    prompt_id = prompt["message_id"]
    reader.answer(prompt, reader.ack(prompt["id"]))
    emoji = {"user": reader.user, "op": "add", "emoji": "+1"}
    assert small_client.post(f"/api/v1/messages/{prompt_id}/emoji", json=emoji).status_code == 202
    task = reader.request("assistant_reply").json()
    (first,) = task["conversation"]["messages"]
    assert first["id"] == prompt_id
    assert first["user_emojis"] == ["+1"]
    assert first["emojis"] == {"+1": 1}
