"""Every bad input to the task protocol gets its error code and changes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from oasst.backend.app import create_app
from oasst.backend.db import Database
from oasst.backend.models import Base
from tests.backend.test_task_flow import SMALL_TREES
from tests.backend.volunteers import Volunteer
from tests.conftest import Keys, make_test_settings


@pytest.fixture
def client(database_url: str, database: Database, keys: Keys) -> Iterator[TestClient]:
    settings = make_test_settings(
        database_url,
        tree_manager={**SMALL_TREES, "num_reviews_initial_prompt": 2},
        enforce_tos_acceptance=False,
        rate_limits={"enabled": False},
        message_size_limit=100,
    )
    app = create_app(settings, database=database, migrate=False)
    with TestClient(app, headers={"X-API-Key": keys.trusted}) as http:
        yield http


def row_counts(database: Database) -> dict[str, int]:
    def count(session: object) -> dict[str, int]:
        return {
            t.name: int(session.scalar(select(func.count()).select_from(t)))  # type: ignore[attr-defined]
            for t in Base.metadata.sorted_tables
        }

    return database.read(count)


def expect_error(response: object, status: int, code: int) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert body["error_code"] == code, body
    assert body["message"]


def test_missing_and_wrong_api_key(client: TestClient, database: Database) -> None:
    user = Volunteer(client, "u").user
    before = row_counts(database)
    expect_error(client.post("/api/v1/tasks/", json={"user": user}, headers={"X-API-Key": "nope"}), 403, 2)
    no_key = TestClient(client.app)
    expect_error(no_key.post("/api/v1/tasks/", json={"user": user}), 403, 2)
    assert row_counts(database) == before


def test_task_protocol_errors_change_nothing(client: TestClient, database: Database, keys: Keys) -> None:
    author, reviewer = Volunteer(client, "author"), Volunteer(client, "reviewer")
    prompt_task = author.request("initial_prompt").json()

    # interaction before ack
    body = {
        "type": "text_reply_to_message",
        "message_id": "never-acked",
        "user_message_id": "m1",
        "text": "hello",
        "user": author.user,
    }
    before = row_counts(database)
    expect_error(client.post("/api/v1/tasks/interaction", json=body), 404, 2100)
    # unknown task id, malformed task id
    expect_error(
        client.post("/api/v1/tasks/00000000-0000-0000-0000-000000000000/ack", json={"message_id": "x"}),
        404,
        2100,
    )
    expect_error(client.post("/api/v1/tasks/not-a-uuid/ack", json={"message_id": "x"}), 422, 102)
    # a task of another API client is invisible
    foreign = TestClient(client.app, headers={"X-API-Key": keys.untrusted})
    expect_error(foreign.post(f"/api/v1/tasks/{prompt_task['id']}/ack", json={"message_id": "x"}), 404, 2100)
    assert row_counts(database) == before

    fid = author.ack(prompt_task["id"])
    # another task cannot take a frontend id that is already bound
    other_task = author.request("initial_prompt").json()
    expect_error(client.post(f"/api/v1/tasks/{other_task['id']}/ack", json={"message_id": fid}), 400, 2000)
    # acking again with the same id is fine
    assert client.post(f"/api/v1/tasks/{prompt_task['id']}/ack", json={"message_id": fid}).status_code == 204
    # second ack with another id
    expect_error(
        client.post(f"/api/v1/tasks/{prompt_task['id']}/ack", json={"message_id": "other"}), 400, 2103
    )
    # empty (whitespace) text, too long text
    body = {**body, "message_id": fid}
    expect_error(client.post("/api/v1/tasks/interaction", json={**body, "text": "   "}), 422, 102)
    expect_error(client.post("/api/v1/tasks/interaction", json={**body, "text": "x" * 101}), 400, 1008)
    # someone else answering the task
    expect_error(client.post("/api/v1/tasks/interaction", json={**body, "user": reviewer.user}), 403, 2108)
    # malformed JSON, unknown interaction type
    response = client.post(
        "/api/v1/tasks/interaction", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    expect_error(response, 422, 102)
    expect_error(client.post("/api/v1/tasks/interaction", json={**body, "type": "dance"}), 422, 102)
    assert row_counts(database)["message"] == before["message"]

    assert client.post("/api/v1/tasks/interaction", json=body).status_code == 200
    # done task cannot be answered again
    expect_error(client.post("/api/v1/tasks/interaction", json={**body, "text": "again"}), 400, 2105)


def test_label_errors(client: TestClient, database: Database) -> None:
    author, reviewer = Volunteer(client, "author"), Volunteer(client, "reviewer")
    author.work_once("initial_prompt")
    task = reviewer.request("label_initial_prompt").json()
    reviewer.ack(task["id"])
    base = {
        "type": "text_labels",
        "message_id": task["message_id"],
        "task_id": task["id"],
        "user": reviewer.user,
        "labels": {"spam": 0.0},
    }
    before = row_counts(database)
    expect_error(
        client.post("/api/v1/tasks/interaction", json={**base, "labels": {"quality": 0.5}}), 400, 2052
    )
    expect_error(
        client.post("/api/v1/tasks/interaction", json={**base, "labels": {"spam": 0, "fails_task": 1}}),
        400,
        2051,
    )
    expect_error(client.post("/api/v1/tasks/interaction", json={**base, "labels": {"spam": 1.5}}), 422, 102)
    expect_error(client.post("/api/v1/tasks/interaction", json={**base, "labels": {"unknown": 1}}), 422, 102)
    wrong_message = {**base, "message_id": "00000000-0000-0000-0000-000000000001"}
    expect_error(client.post("/api/v1/tasks/interaction", json=wrong_message), 400, 2050)
    assert row_counts(database) == before
    assert client.post("/api/v1/tasks/interaction", json=base).status_code == 200


def test_ranking_must_be_a_permutation(client: TestClient, database: Database) -> None:
    team = [Volunteer(client, f"v{i}") for i in range(5)]
    team[0].work_once("initial_prompt")
    team[1].work_once("label_initial_prompt")
    team[2].work_once("label_initial_prompt")
    for _ in range(20):
        task = None
        for v in team:
            response = v.request("rank_assistant_replies")
            if response.status_code == 200:
                task, ranker = response.json(), v
                break
            for w in team:
                w.work_once("random")
        if task:
            break
    assert task is not None, "no ranking task came up"
    fid = ranker.ack(task["id"])
    n = len(task["reply_messages"])
    body = {"type": "message_ranking", "message_id": fid, "user": ranker.user}
    before = row_counts(database)
    for bad in ([0] * n, list(range(1, n + 1)), list(range(n - 1))):
        expect_error(client.post("/api/v1/tasks/interaction", json={**body, "ranking": bad}), 400, 2003)
    assert row_counts(database) == before
    assert (
        client.post("/api/v1/tasks/interaction", json={**body, "ranking": list(range(n))}).status_code == 200
    )


def test_disabled_user_cannot_work(client: TestClient) -> None:
    volunteer = Volunteer(client, "banned")
    volunteer.work_once("initial_prompt")
    user_id = client.get("/api/v1/frontend_users/local/banned").json()["user_id"]
    assert client.put(f"/api/v1/users/{user_id}", params={"enabled": False}).status_code in (200, 204)
    expect_error(volunteer.request("random"), 503, 4001)  # at once, though the user was cached


def test_pending_task_cap(client: TestClient) -> None:
    hoarder = Volunteer(client, "hoarder")
    for _ in range(8):
        assert hoarder.request("initial_prompt").status_code == 200
    expect_error(hoarder.request("initial_prompt"), 429, 1012)


def test_nul_characters_and_huge_bodies_are_refused(client: TestClient, database: Database) -> None:
    volunteer = Volunteer(client, "nul")
    before = row_counts(database)
    body = {"type": "random", "user": {**volunteer.user, "display_name": "bad\u0000name"}}
    expect_error(client.post("/api/v1/tasks/", json=body), 422, 102)
    expect_error(client.get("/api/v1/messages/", params={"lang": "e\x00n"}), 422, 102)
    expect_error(client.get("/api/v1/frontend_users/local/a%00b"), 422, 102)
    huge = {"type": "random", "user": volunteer.user, "lang": "x" * 2_000_000}
    expect_error(client.post("/api/v1/tasks/", json=huge), 413, 102)
    assert row_counts(database) == before
    # an escaped backslash followed by "u0000" is ordinary text, not a NUL
    ok = {"type": "initial_prompt", "user": {**volunteer.user, "display_name": "back\\u0000slash"}}
    assert client.post("/api/v1/tasks/", json=ok).status_code == 200


def test_reused_user_message_id_is_refused(client: TestClient, database: Database) -> None:
    writer = Volunteer(client, "writer")
    first = writer.request("initial_prompt").json()
    second = writer.request("initial_prompt").json()
    body = {
        "type": "text_reply_to_message",
        "user": writer.user,
        "text": "a prompt",
        "user_message_id": "same-id",
    }
    fid1, fid2 = writer.ack(first["id"]), writer.ack(second["id"])
    assert client.post("/api/v1/tasks/interaction", json={**body, "message_id": fid1}).status_code == 200
    before = row_counts(database)
    response = client.post("/api/v1/tasks/interaction", json={**body, "message_id": fid2, "text": "another"})
    expect_error(response, 400, 2000)
    assert row_counts(database) == before


def test_the_database_refuses_a_second_review_by_the_same_user(database: Database, keys: Keys) -> None:
    """Two concurrent label tasks of one user for one message cannot both be stored (unique index)."""
    import uuid

    from sqlalchemy.exc import IntegrityError

    from oasst.backend.errors import error_for_conflict
    from oasst.backend.models import TextLabels
    from tests.backend.factories import client_for_key, make_db_user, make_message

    def setup(session: object) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
        api_client = client_for_key(session, keys.trusted)  # type: ignore[arg-type]
        author, reviewer = make_db_user(session, api_client), make_db_user(session, api_client)  # type: ignore[arg-type]
        message = make_message(session, api_client, author)  # type: ignore[arg-type]
        return api_client.id, reviewer.id, message.id

    client_id, reviewer_id, message_id = database.write(setup)

    def review(session: object) -> None:
        task_id = uuid.uuid4()
        session.add(  # type: ignore[attr-defined]
            TextLabels(
                id=task_id,
                task_id=task_id,
                user_id=reviewer_id,
                api_client_id=client_id,
                message_id=message_id,
                labels={"spam": 0.0},
            )
        )

    database.write(review)
    with pytest.raises(IntegrityError) as caught:
        database.write(review)
    diag = getattr(caught.value.orig, "diag", None)
    error = error_for_conflict(getattr(diag, "constraint_name", None) or str(caught.value.orig))
    assert int(error.error_code) == 2054
