"""Emoji reactions: toggle/add/remove, vote exclusivity, red flags, auto-moderation, and exact counts
under concurrency."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from oasst.backend.db import Database
from oasst.backend.models import FlaggedMessage, Message, MessageEmoji, MessageTreeState, User
from oasst.backend.services import emojis as emojis_service
from oasst.backend.settings import TreeManagerConfiguration
from oasst.protocol.common import MessageEmojiRequest
from oasst.protocol.common import User as WireUser
from tests.backend.factories import World, make_db_user, make_world, wire_user
from tests.conftest import Keys


@pytest.fixture
def world(database: Database, keys: Keys) -> World:
    return database.write(lambda s: make_world(s, keys))


def emoji(client: TestClient, message: Message, who: Any, code: str, op: str | None = None, **kw: Any) -> Any:
    body: dict[str, Any] = {"user": wire_user(who), "emoji": code}
    if op is not None:
        body["op"] = op
    return client.post(f"/api/v1/messages/{message.id}/emoji", json=body, **kw)


def stored(database: Database, message: Message) -> tuple[dict[str, int], int]:
    """The message's counts and how many per-user emoji rows it has."""

    def read(s: Any) -> tuple[dict[str, int], int]:
        counts = s.get_one(Message, message.id).emojis or {}
        rows = s.scalar(
            select(func.count()).select_from(MessageEmoji).where(MessageEmoji.message_id == message.id)
        )
        return counts, rows

    return database.read(read)


def test_toggle_adds_then_removes(app_client: TestClient, database: Database, world: World) -> None:
    m = world.tree.at(0)  # bob's
    first = emoji(app_client, m, world.alice, "heart_eyes")
    assert first.status_code == 202
    assert first.json()["emojis"] == {"heart_eyes": 1} and first.json()["user_emojis"] == ["heart_eyes"]
    assert first.json()["user_is_author"] is False
    second = emoji(app_client, m, world.alice, "heart_eyes").json()
    assert second["emojis"] == {} and second["user_emojis"] == []
    assert stored(database, m) == ({}, 0)


def test_add_and_remove_are_idempotent(app_client: TestClient, database: Database, world: World) -> None:
    m = world.tree.at(0)
    for _ in range(2):
        assert emoji(app_client, m, world.alice, "clap", "add").json()["emojis"] == {"clap": 1}
    emoji(app_client, m, "zoe", "clap", "add")
    assert stored(database, m) == ({"clap": 2}, 2)
    for _ in range(2):
        assert emoji(app_client, m, world.alice, "clap", "remove").json()["emojis"] == {"clap": 1}
    assert emoji(app_client, m, "zoe", "clap", "remove").json()["emojis"] == {}
    assert stored(database, m) == ({}, 0)


def test_up_and_down_votes_exclude_each_other(
    app_client: TestClient, database: Database, world: World
) -> None:
    m = world.tree.at(0)
    emoji(app_client, m, world.alice, "+1")
    body = emoji(app_client, m, world.alice, "-1").json()
    assert body["emojis"] == {"-1": 1} and body["user_emojis"] == ["-1"]
    body = emoji(app_client, m, world.alice, "+1", "add").json()
    assert body["emojis"] == {"+1": 1} and body["user_emojis"] == ["+1"]
    assert stored(database, m) == ({"+1": 1}, 1)


def test_votes_on_own_message_are_ignored(app_client: TestClient, database: Database, world: World) -> None:
    m = world.tree.at(0)  # bob wrote it
    body = emoji(app_client, m, world.bob, "+1").json()
    assert body["emojis"] == {} and body["user_is_author"] is True
    assert emoji(app_client, m, world.bob, "-1", "add").json()["emojis"] == {}
    assert emoji(app_client, m, world.bob, "rofl").json()["emojis"] == {"rofl": 1}  # other emojis count
    assert stored(database, m) == ({"rofl": 1}, 1)


def test_red_flag_queues_the_message_for_moderation(
    app_client: TestClient, database: Database, world: World
) -> None:
    m = world.tree.at(0)
    emoji(app_client, m, world.alice, "red_flag")
    flagged = database.read(lambda s: s.get(FlaggedMessage, m.id))
    assert flagged is not None and flagged.processed is False

    database.write(lambda s: setattr(s.get(FlaggedMessage, m.id), "processed", True))
    emoji(app_client, m, "zoe", "red_flag")  # a new flag puts it back in the queue
    assert database.read(lambda s: s.get_one(FlaggedMessage, m.id).processed) is False
    assert stored(database, m) == ({"red_flag": 2}, 2)


def test_enough_red_flags_delete_a_reply_and_abort_a_prompt(
    app_client: TestClient, database: Database, world: World
) -> None:
    t = world.tree
    for n in range(4):
        emoji(app_client, t.at(0), f"flagger-{n}", "red_flag")
    deleted = database.read(lambda s: [s.get_one(Message, m.id).deleted for m in t.messages])
    assert deleted == [False, True, True, True, True, False]  # the reply and its whole subtree
    for n in range(4):
        emoji(app_client, t.root, f"flagger-{n}", "red_flag")
    assert database.read(lambda s: s.get_one(MessageTreeState, t.id).state) == "aborted_low_grade"


@pytest.mark.parametrize("code", ["_skip_reply", "_skip_labeling", "_skip_ranking"])
def test_internal_codes_are_refused(
    app_client: TestClient, database: Database, world: World, code: str
) -> None:
    response = emoji(app_client, world.tree.at(0), world.alice, code)
    assert response.status_code == 400 and response.json()["error_code"] == 5000
    assert stored(database, world.tree.at(0)) == ({}, 0)


def test_bad_requests_change_nothing(app_client: TestClient, database: Database, world: World) -> None:
    users_before = database.read(lambda s: s.scalar(select(func.count()).select_from(User)))
    unknown = app_client.post(
        "/api/v1/messages/00000000-0000-4000-8000-000000000000/emoji",
        json={"user": wire_user("newcomer"), "emoji": "+1"},
    )
    assert unknown.status_code == 404 and unknown.json()["error_code"] == 2001
    bad_code = emoji(app_client, world.tree.at(0), "newcomer", "smile")
    assert bad_code.status_code == 422 and bad_code.json()["error_code"] == 102
    bad_op = emoji(app_client, world.tree.at(0), "newcomer", "+1", "flip")
    assert bad_op.status_code == 422
    headers = {"X-API-Key": world.untrusted_key}
    foreign = emoji(app_client, world.tree.at(0), "newcomer", "+1", headers=headers)
    assert foreign.status_code == 404 and foreign.json()["error_code"] == 2001
    assert database.read(lambda s: s.scalar(select(func.count()).select_from(User))) == users_before
    assert stored(database, world.tree.at(0)) == ({}, 0)


def test_disabled_user_cannot_react(app_client: TestClient, database: Database, world: World) -> None:
    database.write(lambda s: setattr(s.get_one(User, world.alice.id), "enabled", False))
    response = emoji(app_client, world.tree.at(0), world.alice, "+1")
    assert response.status_code == 503 and response.json()["error_code"] == 4001
    assert stored(database, world.tree.at(0)) == ({}, 0)


def test_untrusted_client_reacts_to_its_own_messages(
    app_client: TestClient, database: Database, world: World
) -> None:
    body = emoji(app_client, world.own, "dave", "100", headers={"X-API-Key": world.untrusted_key}).json()
    assert body["emojis"] == {"100": 1}


def test_concurrent_reactions_count_exactly(database: Database, world: World) -> None:
    """Many users react at once; every add and every vote switch is counted exactly once."""
    m = world.tree.at(0)
    users = database.write(lambda s: [make_db_user(s, world.trusted) for _ in range(24)])
    cfg = TreeManagerConfiguration()
    barrier = threading.Barrier(len(users))
    errors: list[BaseException] = []

    def react(user: User, code: str) -> None:
        request = MessageEmojiRequest(
            user=WireUser(id=user.username, display_name=user.display_name, auth_method="local"),
            op="add",
            emoji=code,
        )
        database.write(
            lambda s: emojis_service.handle_emoji_request(
                s, client=world.trusted, message_id=m.id, request=request, cfg=cfg
            )
        )

    def worker(user: User, i: int) -> None:
        try:
            barrier.wait(timeout=30)
            react(user, "+1")
            react(user, "heart_eyes")
            if i % 3 == 0:
                react(user, "-1")  # switches this user's vote
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(u, i)) for i, u in enumerate(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    counts, rows = stored(database, m)
    assert counts == {"+1": 16, "-1": 8, "heart_eyes": 24}
    assert rows == 48
