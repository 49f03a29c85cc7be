"""Moderation: recursive delete, undelete of ancestors, edits with history, halting trees, and that only
trusted clients may do any of it."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from oasst.backend.db import Database
from oasst.backend.models import Message, MessageRevision, MessageTreeState
from tests.backend.factories import World, make_db_user, make_message, make_tree, make_world, wire_user
from tests.conftest import Keys

API = "/api/v1/messages"


@pytest.fixture
def world(database: Database, keys: Keys) -> World:
    return database.write(lambda s: make_world(s, keys))


def flags(database: Database, messages: list[Message]) -> list[tuple[bool, int]]:
    """(deleted, children_count) of each message, fresh from the database."""
    return database.read(
        lambda s: [
            (s.get_one(Message, m.id).deleted, s.get_one(Message, m.id).children_count) for m in messages
        ]
    )


def state(database: Database, tree_id: Any) -> tuple[str, bool]:
    mts = database.read(lambda s: s.get_one(MessageTreeState, tree_id))
    return mts.state, mts.active


def test_delete_cascades_to_descendants(app_client: TestClient, database: Database, world: World) -> None:
    t = world.tree
    response = app_client.delete(f"{API}/{t.at(0).id}")
    assert response.status_code == 204
    assert flags(database, t.messages) == [
        (False, 1),  # the root keeps one live reply
        (True, 0),
        (True, 0),
        (True, 0),
        (True, 0),
        (False, 0),
    ]
    tree = app_client.get(f"{API}/{t.root.id}/tree").json()
    assert [m["id"] for m in tree["messages"]] == [str(t.root.id), str(t.at(1).id)]
    assert app_client.get(f"{API}/{t.at(0, 0).id}").json()["deleted"] is True


def test_undelete_restores_the_message_and_its_ancestors(
    app_client: TestClient, database: Database, world: World
) -> None:
    t = world.tree
    app_client.delete(f"{API}/{t.at(0).id}")
    response = app_client.put(f"{API}/{t.at(0, 0, 0).id}/undelete")
    assert response.status_code == 202
    assert flags(database, t.messages) == [
        (False, 2),
        (False, 1),  # at(0, 1) stays deleted
        (False, 1),
        (False, 0),
        (True, 0),
        (False, 0),
    ]


def test_deleting_everything_halts_a_growing_tree(
    app_client: TestClient, database: Database, world: World
) -> None:
    app_client.delete(f"{API}/{world.tree.root.id}")
    assert state(database, world.tree.id) == ("halted_by_moderator", False)


def test_deleting_the_last_pending_reply_lets_the_tree_move_to_ranking(
    app_client: TestClient, database: Database, world: World
) -> None:
    def build(s: Any) -> tuple[Any, Message]:
        tree = make_tree(s, world.trusted, world.alice, goal_tree_size=6)
        pending = make_message(s, world.trusted, world.bob, parent=tree.at(1), review_result=None)
        return tree, pending

    tree, pending = database.write(build)
    assert state(database, tree.id) == ("growing", True)
    app_client.delete(f"{API}/{pending.id}")
    assert state(database, tree.id) == ("ranking", True)


def test_untrusted_clients_cannot_moderate(app_client: TestClient, database: Database, world: World) -> None:
    headers = {"X-API-Key": world.untrusted_key}
    own = world.own.id  # even on the client's own message
    calls = [
        app_client.delete(f"{API}/{own}", headers=headers),
        app_client.put(f"{API}/{own}/undelete", headers=headers),
        app_client.post(
            f"{API}/{own}/edit", headers=headers, json={"user": wire_user("x"), "new_content": "hi"}
        ),
        app_client.get(f"{API}/{own}/history", headers=headers),
        app_client.put(f"{API}/{own}/tree/state", headers=headers, params={"halt": True}),
    ]
    for response in calls:
        assert response.status_code == 403 and response.json()["error_code"] == 2
    assert flags(database, [world.own]) == [(False, 0)]
    assert state(database, own) == ("growing", True)
    assert database.read(lambda s: s.get_one(Message, own).text) == "untrusted root"


def test_unknown_message_is_not_found(app_client: TestClient, database: Database, world: World) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    for response in (
        app_client.delete(f"{API}/{unknown}"),
        app_client.put(f"{API}/{unknown}/undelete"),
        app_client.post(f"{API}/{unknown}/edit", json={"user": wire_user("mod"), "new_content": "x"}),
        app_client.get(f"{API}/{unknown}/history"),
        app_client.put(f"{API}/{unknown}/tree/state", params={"halt": True}),
    ):
        assert response.status_code == 404 and response.json()["error_code"] == 2001
    assert app_client.delete(f"{API}/not-a-uuid").status_code == 422


def test_edit_keeps_the_original_and_every_edit(
    app_client: TestClient, database: Database, world: World
) -> None:
    m = world.tree.at(0)  # written by bob
    database.write(lambda s: make_db_user(s, world.trusted, "mod"))
    first = app_client.post(
        f"{API}/{m.id}/edit", json={"user": wire_user("mod"), "new_content": "better text"}
    )
    assert first.status_code == 200
    assert first.json()["text"] == "better text" and first.json()["edited"] is True
    app_client.post(f"{API}/{m.id}/edit", json={"user": wire_user("mod"), "new_content": "best text"})
    assert app_client.get(f"{API}/{m.id}").json()["text"] == "best text"

    history = app_client.get(f"{API}/{m.id}/history", headers={"x-oasst-user": "local:user-bob"}).json()
    assert [r["text"] for r in history] == ["text 1", "better text", "best text"]
    assert history[0]["user_id"] == str(world.bob.id) and history[0]["user_is_author"] is True
    assert history[0]["created_date"] == app_client.get(f"{API}/{m.id}").json()["created_date"]
    assert history[1]["user_id"] == history[2]["user_id"] != str(world.bob.id)
    assert history[1]["user_is_author"] is False
    assert app_client.get(f"{API}/{world.tree.root.id}/history").json() == []


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [("x" * 2001, 400, 1008), ("   \n ", 400, 1010), ("", 422, 102)],
)
def test_bad_edits_change_nothing(
    app_client: TestClient, database: Database, world: World, content: str, status: int, code: int
) -> None:
    m = world.tree.at(0)
    response = app_client.post(f"{API}/{m.id}/edit", json={"user": wire_user("mod"), "new_content": content})
    assert response.status_code == status and response.json()["error_code"] == code
    message = database.read(lambda s: s.get_one(Message, m.id))
    assert message.text == "text 1" and message.edited is False
    assert database.read(lambda s: s.scalar(select(func.count()).select_from(MessageRevision))) == 0


def test_halt_and_resume_a_tree(app_client: TestClient, database: Database, world: World) -> None:
    t = world.tree
    halted = app_client.put(f"{API}/{t.at(0, 0).id}/tree/state", params={"halt": True})
    assert halted.status_code == 200
    assert halted.json()["state"] == "halted_by_moderator" and halted.json()["active"] is False
    assert state(database, t.id) == ("halted_by_moderator", False)
    resumed = app_client.put(f"{API}/{t.root.id}/tree/state", params={"halt": False}).json()
    assert resumed["state"] == "growing" and resumed["active"] is True
    assert app_client.get(f"{API}/{t.root.id}/tree/state").json()["state"] == "growing"
