"""Model replies inserted into growing trees as synthetic assistant messages, then reviewed and ranked.

``POST /api/v1/messages/{id}/synthetic_reply`` and ``GET /api/v1/messages/synthetic_candidates``, on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from oasst.backend.app import create_app
from oasst.backend.db import Database
from oasst.backend.errors import ErrorCode, OasstError
from oasst.backend.models import Message, MessageTreeState, Task, TreeState, utcnow
from oasst.backend.services.synthetic import add_synthetic_reply
from oasst.backend.settings import Settings
from oasst.client import BackendClient
from oasst.protocol.common import SyntheticReplyRequest
from tests.backend.factories import (
    Tree,
    client_for_key,
    make_db_user,
    make_message,
    make_tree,
)
from tests.backend.volunteers import Volunteer
from tests.conftest import Keys, make_test_settings

SMALL_TREES = {
    "goal_tree_size": 3,
    "max_children_count": 2,
    "max_tree_depth": 2,
    "num_reviews_initial_prompt": 1,
    "num_reviews_reply": 1,
    "num_required_rankings": 1,
    "max_active_trees": 1,
    "p_activate_backlog_tree": 0.0,
}


@pytest.fixture
def small_settings(database_url: str) -> Settings:
    return make_test_settings(
        database_url, tree_manager=SMALL_TREES, enforce_tos_acceptance=False, rate_limits={"enabled": False}
    )


@pytest.fixture
def api(small_settings: Settings, database: Database, keys: Keys) -> Iterator[TestClient]:
    app = create_app(small_settings, database=database, migrate=False)
    with TestClient(app, headers={"X-API-Key": keys.trusted}, raise_server_exceptions=False) as client:
        yield client


def prompt_tree(database: Database, keys: Keys, **state: Any) -> Tree:
    """A growing tree that is only an accepted prompt (room for two replies, goal three messages)."""
    values = {"goal_tree_size": 3, "max_children_count": 2, "max_depth": 2, **state}

    def work(s: Any) -> Tree:
        client = client_for_key(s, keys.trusted)
        return make_tree(s, client, make_db_user(s, client), shape=[], texts=["Tell me a joke."], **values)

    return database.write(work)


def post(
    api: TestClient, parent_id: object, text: str = "A reply.", model: str = "tiny-1", **extra: Any
) -> Any:
    body = {"text": text, "model_name": model, **extra}
    return api.post(f"/api/v1/messages/{parent_id}/synthetic_reply", json=body)


def error_code(response: Any) -> int:
    return int(response.json()["error_code"])


def children(database: Database, parent_id: uuid.UUID) -> list[Message]:
    return database.read(lambda s: list(s.scalars(select(Message).where(Message.parent_id == parent_id))))


# ------------------------------------------------------------------------------------------ inserting


def test_inserts_a_synthetic_assistant_reply(api: TestClient, database: Database, keys: Keys) -> None:
    tree = prompt_tree(database, keys)
    response = post(api, tree.id, "  Why did the chicken cross the road?  ", lang="en")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["synthetic"] is True and body["model_name"] == "tiny-1" and body["is_assistant"] is True
    assert body["text"] == "Why did the chicken cross the road?"
    assert body["parent_id"] == str(tree.id) and body["message_tree_id"] == str(tree.id)
    assert body["review_result"] is None and body["review_count"] == 0  # it waits for reviews
    (row,) = children(database, tree.id)
    assert (row.role, row.depth, row.user_id, row.lang, row.synthetic) == ("assistant", 1, None, "en", True)
    parent = database.read(lambda s: s.get(Message, tree.id))
    assert parent is not None and parent.children_count == 1


def test_the_reply_is_reviewed_like_a_volunteers(api: TestClient, database: Database, keys: Keys) -> None:
    tree = prompt_tree(database, keys)
    reply_id = post(api, tree.id).json()["id"]
    task = Volunteer(api, "reviewer").work_once("label_assistant_reply")
    assert task is not None and task["message_id"] == reply_id
    row = database.read(lambda s: s.get(Message, uuid.UUID(reply_id)))
    assert row is not None and row.review_count == 1 and row.review_result is True


def test_untrusted_keys_are_refused(api: TestClient, database: Database, keys: Keys) -> None:
    tree = prompt_tree(database, keys)
    headers = {"X-API-Key": keys.untrusted}
    body = {"text": "x", "model_name": "m"}
    response = api.post(f"/api/v1/messages/{tree.id}/synthetic_reply", json=body, headers=headers)
    assert response.status_code == 403 and error_code(response) == ErrorCode.API_CLIENT_NOT_AUTHORIZED
    response = api.get("/api/v1/messages/synthetic_candidates", headers=headers)
    assert response.status_code == 403 and error_code(response) == ErrorCode.API_CLIENT_NOT_AUTHORIZED
    assert children(database, tree.id) == []


def test_only_accepted_prompter_messages_take_synthetic_replies(
    api: TestClient, database: Database, keys: Keys
) -> None:
    def work(s: Any) -> tuple[Message, Message, Message]:
        client = client_for_key(s, keys.trusted)
        user = make_db_user(s, client)
        tree = make_tree(s, client, user, shape=[[]], goal_tree_size=10)
        unreviewed = make_message(s, client, user, parent=tree.at(0), review_result=None)
        deleted = make_message(s, client, user, parent=tree.at(0), deleted=True)
        return tree.at(0), unreviewed, deleted

    assistant, unreviewed, deleted = database.write(work)
    for parent in (assistant, unreviewed, deleted):
        response = post(api, parent.id)
        assert response.status_code == 400, response.text
        assert error_code(response) == ErrorCode.SYNTHETIC_REPLY_INVALID_PARENT
    response = post(api, uuid.uuid4())
    assert response.status_code == 404 and error_code(response) == ErrorCode.MESSAGE_NOT_FOUND


@pytest.mark.parametrize(
    ("state", "code"),
    [
        (TreeState.RANKING, ErrorCode.TASK_TREE_FULL),
        (TreeState.PROMPT_LOTTERY_WAITING, ErrorCode.TASK_TREE_FULL),
        (TreeState.HALTED_BY_MODERATOR, ErrorCode.TREE_IN_ABORTED_STATE),
    ],
)
def test_only_growing_trees_take_synthetic_replies(
    api: TestClient, database: Database, keys: Keys, state: TreeState, code: ErrorCode
) -> None:
    tree = prompt_tree(database, keys, state=state)
    response = post(api, tree.id)
    assert response.status_code == 400 and error_code(response) == code
    assert children(database, tree.id) == []


def test_limits_of_the_parent_and_the_tree(api: TestClient, database: Database, keys: Keys) -> None:
    tree = prompt_tree(database, keys, goal_tree_size=10, max_children_count=2)
    assert post(api, tree.id, model="a").status_code == 201
    again = post(api, tree.id, "Another one.", model="a")  # one reply per model and parent
    assert again.status_code == 400 and error_code(again) == ErrorCode.TASK_MESSAGE_DUPLICATE_REPLY
    assert post(api, tree.id, model="b").status_code == 201
    full = post(api, tree.id, model="c")
    assert full.status_code == 400 and error_code(full) == ErrorCode.TASK_PARENT_FULL

    small = prompt_tree(database, keys, goal_tree_size=2, max_children_count=5)
    assert post(api, small.id, model="a").status_code == 201
    grown = post(api, small.id, model="b")
    assert grown.status_code == 400 and error_code(grown) == ErrorCode.TASK_TREE_FULL

    deep = prompt_tree(database, keys, max_depth=0)
    too_deep = post(api, deep.id)
    assert too_deep.status_code == 400 and error_code(too_deep) == ErrorCode.TASK_PARENT_FULL

    empty = post(api, tree.id, "   ", model="d")
    assert empty.status_code == 400 and error_code(empty) == ErrorCode.TASK_MESSAGE_TEXT_EMPTY
    long = post(api, prompt_tree(database, keys).id, "x" * 5000)
    assert long.status_code == 400 and error_code(long) == ErrorCode.TASK_MESSAGE_TOO_LONG


def test_a_volunteer_writing_a_reply_keeps_the_slot(api: TestClient, database: Database, keys: Keys) -> None:
    tree = prompt_tree(database, keys, max_children_count=1, goal_tree_size=10)

    def open_task(s: Any) -> None:
        client = client_for_key(s, keys.trusted)
        s.add(
            Task(
                id=uuid.uuid4(),
                created_date=utcnow(),
                user_id=make_db_user(s, client).id,
                payload={"type": "assistant_reply"},
                api_client_id=client.id,
                ack=True,
                done=False,
                skipped=False,
                message_tree_id=tree.id,
                parent_message_id=tree.id,
                collective=False,
                task_type="assistant_reply",
            )
        )

    database.write(open_task)
    response = post(api, tree.id)
    assert response.status_code == 400 and error_code(response) == ErrorCode.TASK_PARENT_FULL
    assert api.get("/api/v1/messages/synthetic_candidates").json() == []


def test_concurrent_inserts_never_exceed_max_children(
    small_settings: Settings, database: Database, keys: Keys
) -> None:
    tree = prompt_tree(database, keys, max_children_count=3, goal_tree_size=50)
    # each thread has its own engine connection: they race for the tree lock for real
    workers = 8
    barrier = threading.Barrier(workers)
    outcomes: list[str] = []

    def insert(n: int) -> None:
        body = SyntheticReplyRequest(text=f"reply {n}", model_name=f"model-{n}")
        barrier.wait()
        try:
            database.write(
                lambda s: add_synthetic_reply(
                    s,
                    client=client_for_key(s, keys.trusted),
                    settings=small_settings,
                    parent_id=tree.id,
                    body=body,
                )
            )
            outcomes.append("ok")
        except OasstError as exc:
            outcomes.append(exc.error_code.name)

    threads = [threading.Thread(target=insert, args=(n,)) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["TASK_PARENT_FULL"] * 5 + ["ok"] * 3
    assert len(children(database, tree.id)) == 3
    parent = database.read(lambda s: s.get(Message, tree.id))
    assert parent is not None and parent.children_count == 3


# ------------------------------------------------------------------------------------------ candidates


def test_candidates_list_open_prompter_messages(api: TestClient, database: Database, keys: Keys) -> None:
    def work(s: Any) -> tuple[Tree, Tree]:
        client = client_for_key(s, keys.trusted)
        user = make_db_user(s, client)
        # root -> assistant -> prompter (a leaf that needs an assistant reply)
        deep = make_tree(
            s, client, user, shape=[[[]]], texts=["Q1", "A1", "Q2"], goal_tree_size=10, max_children_count=2
        )
        german = make_tree(s, client, user, lang="de", shape=[], texts=["Frage"], goal_tree_size=10)
        ranking = make_tree(s, client, user, shape=[], state=TreeState.RANKING)
        assert ranking.state.state == TreeState.RANKING
        return deep, german

    deep, german = database.write(work)
    found = api.get("/api/v1/messages/synthetic_candidates", params={"lang": "en"}).json()
    by_parent = {c["parent_id"]: c for c in found}
    assert set(by_parent) == {str(deep.at(0, 0).id), str(deep.id)}
    assert found[0]["parent_id"] == str(deep.at(0, 0).id)  # the leaf (no replies) comes first
    leaf = by_parent[str(deep.at(0, 0).id)]
    assert [m["text"] for m in leaf["conversation"]["messages"]] == ["Q1", "A1", "Q2"]
    assert (leaf["replies"], leaf["lang"], leaf["message_tree_id"]) == (0, "en", str(deep.id))
    assert by_parent[str(deep.id)]["replies"] == 1

    everything = api.get("/api/v1/messages/synthetic_candidates").json()
    assert str(german.id) in {c["parent_id"] for c in everything}
    assert len(api.get("/api/v1/messages/synthetic_candidates", params={"max_count": 1}).json()) == 1

    assert post(api, deep.at(0, 0).id, model="m1").status_code == 201
    for_m1 = api.get("/api/v1/messages/synthetic_candidates", params={"lang": "en", "model_name": "m1"})
    assert str(deep.at(0, 0).id) not in {c["parent_id"] for c in for_m1.json()}
    for_m2 = api.get("/api/v1/messages/synthetic_candidates", params={"lang": "en", "model_name": "m2"})
    assert str(deep.at(0, 0).id) in {c["parent_id"] for c in for_m2.json()}


def test_candidates_and_replies_through_the_client(
    small_settings: Settings, database: Database, keys: Keys
) -> None:
    tree = prompt_tree(database, keys)
    app = create_app(small_settings, database=database, migrate=False)

    async def go() -> tuple[int, bool, str | None]:
        transport = httpx.ASGITransport(app=app)
        async with BackendClient("http://backend", keys.trusted, transport=transport) as backend:
            (candidate,) = await backend.synthetic_candidates(lang="en", model_name="tiny")
            message = await backend.post_synthetic_reply(candidate.parent_id, "Hello!", "tiny")
            left = await backend.synthetic_candidates(lang="en", model_name="tiny")
            return len(left), bool(message.synthetic), message.model_name

    assert asyncio.run(go()) == (0, True, "tiny")
    assert [m.text for m in children(database, tree.id)] == ["Hello!"]


# ------------------------------------------------------------------------------------------ ranking


def _review_all_and_rank(api: TestClient, database: Database, tree_id: uuid.UUID) -> dict[str, Any]:
    """Volunteers review every pending reply; the tree moves on to ranking; one asks for a ranking task."""
    for n in range(6):
        if Volunteer(api, f"reviewer-{n}").work_once("label_assistant_reply") is None:
            break
    mts = database.read(lambda s: s.get(MessageTreeState, tree_id))
    assert mts is not None and mts.state == TreeState.RANKING
    response = Volunteer(api, "ranker").request("rank_assistant_replies")
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    assert task["ranking_parent_id"] == str(tree_id)
    return task


def test_ranking_tasks_show_synthetic_replies(api: TestClient, database: Database, keys: Keys) -> None:
    tree = prompt_tree(database, keys)
    ids = {post(api, tree.id, "First model's joke.", model="a").json()["id"]}
    ids.add(post(api, tree.id, "Second model's joke.", model="b").json()["id"])
    task = _review_all_and_rank(api, database, tree.id)
    assert {m["id"] for m in task["reply_messages"]} == ids
    # every candidate is synthetic: the task says so
    assert task["reveal_synthetic"] is True
    assert all(m["synthetic"] is True for m in task["reply_messages"])


def test_ranking_tasks_hide_synthetic_beside_human_replies(
    api: TestClient, database: Database, keys: Keys
) -> None:
    tree = prompt_tree(database, keys)

    def human_reply(s: Any) -> Message:
        client = client_for_key(s, keys.trusted)
        return make_message(
            s, client, make_db_user(s, client), parent=s.get(Message, tree.id), text="Human joke."
        )

    human = database.write(human_reply)
    synthetic_id = post(api, tree.id, "Model joke.").json()["id"]
    task = _review_all_and_rank(api, database, tree.id)
    assert {m["id"] for m in task["reply_messages"]} == {str(human.id), synthetic_id}
    assert task["reveal_synthetic"] is False
    assert all(m["synthetic"] is None for m in task["reply_messages"])
