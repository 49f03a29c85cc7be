"""``/text_labels``: free labels overwrite, reports red-flag, task labels go through the task service, and
the label lists."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from oasst.backend.db import Database
from oasst.backend.models import FlaggedMessage, Message, MessageEmoji, Task, TextLabels, User
from oasst.protocol.common import REPORT_LABELS, TextLabel
from tests.backend.factories import World, make_db_user, make_world, wire_user
from tests.conftest import Keys

API = "/api/v1/text_labels"


@pytest.fixture
def world(database: Database, keys: Keys) -> World:
    return database.write(lambda s: make_world(s, keys))


def label(client: TestClient, message: Any, who: Any, labels: dict[str, float], **extra: Any) -> Any:
    body = {"type": "text_labels", "user": wire_user(who), "message_id": str(message.id), "labels": labels}
    headers = extra.pop("headers", None)
    return client.post(f"{API}/", json={**body, **extra}, headers=headers)


def rows(database: Database, message: Any) -> list[TextLabels]:
    return database.read(
        lambda s: list(s.scalars(select(TextLabels).where(TextLabels.message_id == message.id)))
    )


def test_free_label_is_stored_and_overwritten(
    app_client: TestClient, database: Database, world: World
) -> None:
    m = world.tree.at(0)
    first = label(app_client, m, world.alice, {"quality": 0.25, "humor": 1}, text="meh")
    assert first.status_code == 204
    label(app_client, m, world.alice, {"quality": 0.75}, text="better")
    label(app_client, m, "zoe", {"spam": 1})
    stored = {r.user_id: r for r in rows(database, m)}
    assert len(stored) == 2
    mine = stored[world.alice.id]
    assert mine.labels == {"quality": 0.75} and mine.text == "better"
    assert mine.task_id is None and mine.is_report is False
    review_count = database.read(lambda s: s.get_one(Message, m.id).review_count)
    assert review_count == 0  # free labels are no reviews


def test_report_red_flags_the_message(app_client: TestClient, database: Database, world: World) -> None:
    m = world.tree.at(1)
    response = label(app_client, m, world.alice, {"spam": 1, "toxicity": 0.5}, text="rude", is_report=True)
    assert response.status_code == 204
    (row,) = rows(database, m)
    assert row.is_report is True and row.text == "rude"
    assert database.read(lambda s: s.get_one(Message, m.id).emojis) == {"red_flag": 1}
    emoji = database.read(lambda s: s.get(MessageEmoji, (m.id, world.alice.id, "red_flag")))
    assert emoji is not None
    flagged = database.read(lambda s: s.get(FlaggedMessage, m.id))
    assert flagged is not None and flagged.processed is False
    label(app_client, m, world.alice, {"spam": 1}, is_report=True)  # reporting again: still one flag
    assert database.read(lambda s: s.get_one(Message, m.id).emojis) == {"red_flag": 1}
    assert len(rows(database, m)) == 1


def test_bad_labels_change_nothing(app_client: TestClient, database: Database, world: World) -> None:
    users_before = database.read(lambda s: s.scalar(select(func.count()).select_from(User)))
    unknown = label(app_client, type("M", (), {"id": uuid.uuid4()}), "newcomer", {"spam": 1})
    assert unknown.status_code == 404 and unknown.json()["error_code"] == 2001
    foreign = label(
        app_client, world.tree.root, "newcomer", {"spam": 1}, headers={"X-API-Key": world.untrusted_key}
    )
    assert foreign.status_code == 404 and foreign.json()["error_code"] == 2001
    out_of_range = label(app_client, world.tree.root, "newcomer", {"spam": 2})
    assert out_of_range.status_code == 422 and out_of_range.json()["error_code"] == 102
    unknown_label = label(app_client, world.tree.root, "newcomer", {"cuteness": 1})
    assert unknown_label.status_code == 422
    assert database.read(lambda s: s.scalar(select(func.count()).select_from(User))) == users_before
    assert database.read(lambda s: s.scalar(select(func.count()).select_from(TextLabels))) == 0


def test_disabled_user_cannot_label(app_client: TestClient, database: Database, world: World) -> None:
    database.write(lambda s: setattr(s.get_one(User, world.alice.id), "enabled", False))
    response = label(app_client, world.tree.root, world.alice, {"spam": 0})
    assert response.status_code == 503 and response.json()["error_code"] == 4001
    assert rows(database, world.tree.root) == []


def test_task_labels_are_handed_to_the_task_service(
    app_client: TestClient, database: Database, world: World
) -> None:
    """With a task_id the labels complete that task and count as a review (the original only stored them)."""
    m = world.tree.at(0)

    def open_task(s: Any) -> uuid.UUID:
        reviewer = make_db_user(s, world.trusted, "reviewer")
        task = Task(
            id=uuid.uuid4(),
            user_id=reviewer.id,
            api_client_id=world.trusted.id,
            task_type="label_assistant_reply",
            payload={
                "message_id": str(m.id),
                "valid_labels": ["spam", "quality"],
                "mandatory_labels": ["spam"],
            },
            ack=True,
            frontend_message_id="task-fm-1",
            message_tree_id=world.tree.id,
            parent_message_id=m.id,
        )
        s.add(task)
        return task.id

    task_id = database.write(open_task)
    response = label(app_client, m, "reviewer", {"spam": 0, "quality": 1}, task_id=str(task_id))
    assert response.status_code == 204
    (row,) = rows(database, m)
    assert row.id == task_id and row.task_id == task_id
    assert database.read(lambda s: s.get_one(Task, task_id).done) is True
    assert database.read(lambda s: s.get_one(Message, m.id).review_count) == 1

    missing = label(app_client, m, "reviewer", {"spam": 0}, task_id=str(uuid.uuid4()))
    assert missing.status_code == 404 and missing.json()["error_code"] == 2100


def test_valid_labels_follow_the_message_kind(app_client: TestClient, world: World) -> None:
    def names(params: dict[str, str] | None = None) -> list[str]:
        body = app_client.get(f"{API}/valid_labels", params=params).json()
        return [d["name"] for d in body["valid_labels"]]

    t = world.tree
    everything = names()
    assert "fails_task" not in everything and len(everything) == len(TextLabel) - 1
    assert "fails_task" not in names({"message_id": str(t.root.id)})
    assistant = names({"message_id": str(t.at(0).id)})
    assert "fails_task" in assistant and "helpfulness" in assistant
    assert "helpfulness" not in names({"message_id": str(t.at(0, 0).id)})
    spam = app_client.get(f"{API}/valid_labels").json()["valid_labels"][0]
    assert spam == {
        "name": "spam",
        "widget": "yes_no",
        "display_text": "Seems to be intentionally low-quality or irrelevant",
        "help_text": None,
    }
    unknown = app_client.get(f"{API}/valid_labels", params={"message_id": str(uuid.uuid4())})
    assert unknown.status_code == 404 and unknown.json()["error_code"] == 2001


def test_report_labels_need_no_key(app_client: TestClient, world: World) -> None:
    body = app_client.get(f"{API}/report_labels", headers={"X-API-Key": ""}).json()
    assert [d["name"] for d in body["valid_labels"]] == [label.value for label in REPORT_LABELS]
