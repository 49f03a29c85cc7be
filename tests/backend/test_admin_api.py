"""`/api/v1/admin`: API keys with the root token, settings without secrets, purges, merges, flagged queue."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from oasst.backend.db import Database
from oasst.backend.models import (
    FlaggedMessage,
    Message,
    MessageEmoji,
    MessageReaction,
    MessageTreeState,
    Task,
    TextLabels,
    TreeState,
    User,
    UserStats,
    utcnow,
)
from tests.backend.factories import client_for_key, make_db_user, make_message, make_tree
from tests.conftest import ROOT_TOKEN, Keys

ROOT = {"Authorization": f"Bearer {ROOT_TOKEN}"}
NEW_CLIENT = {"description": "discord bot", "frontend_type": "discord", "trusted": False}


def _create_key(app_client: TestClient) -> str:
    response = app_client.post("/api/v1/admin/api_client", json=NEW_CLIENT, headers=ROOT)
    assert response.status_code == 200, response.text
    key = response.json()
    assert isinstance(key, str) and len(key) >= 32
    return key


# --- API keys --------------------------------------------------------------------------------------


def test_root_token_mints_a_working_key(app_client: TestClient) -> None:
    key = _create_key(app_client)
    response = app_client.get("/api/v1/admin/backend_settings/public", headers={"X-API-Key": key})
    assert response.status_code == 200
    assert response.json()["message_size_limit"] == 2000


def test_minting_needs_the_root_token(app_client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": ROOT_TOKEN[:-1]}):
        response = app_client.post("/api/v1/admin/api_client", json=NEW_CLIENT, headers=headers)
        assert response.status_code == 403
        assert response.json()["error_code"] == 3


def test_listed_clients_carry_no_keys(app_client: TestClient) -> None:
    key = _create_key(app_client)
    clients = app_client.get("/api/v1/admin/api_clients", headers=ROOT).json()
    assert {c["description"] for c in clients} >= {"discord bot", "trusted test", "untrusted test"}
    assert key not in str(clients)
    assert all("api_key" not in c and "api_key_hash" not in c for c in clients)
    assert app_client.get("/api/v1/admin/api_clients").json()["error_code"] == 3


def test_a_disabled_key_stops_working_at_once(app_client: TestClient) -> None:
    key = _create_key(app_client)
    headers = {"X-API-Key": key}
    assert app_client.get("/api/v1/admin/backend_settings/public", headers=headers).status_code == 200
    client_id = next(
        c["id"]
        for c in app_client.get("/api/v1/admin/api_clients", headers=ROOT).json()
        if c["description"] == "discord bot"
    )
    response = app_client.put(
        f"/api/v1/admin/api_client/{client_id}", params={"enabled": False}, headers=ROOT
    )
    assert response.status_code == 200 and response.json()["enabled"] is False
    refused = app_client.get("/api/v1/admin/backend_settings/public", headers=headers)
    assert refused.status_code == 403 and refused.json()["error_code"] == 2
    app_client.put(f"/api/v1/admin/api_client/{client_id}", params={"enabled": True}, headers=ROOT)
    assert app_client.get("/api/v1/admin/backend_settings/public", headers=headers).status_code == 200


# --- settings --------------------------------------------------------------------------------------


def test_full_settings_hide_secrets(app_client: TestClient, keys: Keys) -> None:
    app = app_client.app
    app.state.settings = app.state.settings.model_copy(  # type: ignore[attr-defined]
        update={
            "database_url": "postgresql+psycopg://oasst:db-pass-9876@db.example:5432/oasst",
            "redis_url": "redis://:redis-pass-5432@redis.example:6379/0",
        }
    )
    response = app_client.get("/api/v1/admin/backend_settings/full")
    assert response.status_code == 200
    body = response.json()
    for secret in ("db-pass-9876", "redis-pass-5432", ROOT_TOKEN, keys.trusted):
        assert secret not in response.text
    assert body["database_url"] == "postgresql+psycopg://oasst:**********@db.example:5432/oasst"
    assert body["redis_url"] == "redis://:**********@redis.example:6379/0"
    assert body["root_tokens"] == ["**********"]
    assert body["tree_manager"]["goal_tree_size"] == 12

    untrusted = app_client.get("/api/v1/admin/backend_settings/full", headers={"X-API-Key": keys.untrusted})
    assert untrusted.status_code == 403 and untrusted.json()["error_code"] == 2
    public = app_client.get("/api/v1/admin/backend_settings/public", headers={"X-API-Key": keys.untrusted})
    assert "database_url" not in public.json() and public.json()["tree_manager"]["max_children_count"] == 3


# --- purges ----------------------------------------------------------------------------------------


@dataclass
class PurgeWorld:
    bad: uuid.UUID  # the user to purge
    own_tree: uuid.UUID  # the bad user's tree (others replied in it)
    other_tree: uuid.UUID  # someone else's tree with a reply by the bad user
    other_root: uuid.UUID
    bad_reply: uuid.UUID
    below_bad_reply: uuid.UUID
    sibling: uuid.UUID


def _purge_world(session: Session, keys: Keys) -> PurgeWorld:
    client = client_for_key(session, keys.trusted)
    bad, good, ranker = (make_db_user(session, client, n) for n in ("bad", "good", "ranker"))
    own = make_tree(session, client, [bad, good], shape=[[[]], []])
    other = make_tree(session, client, good, shape=[[]], state=TreeState.RANKING, goal_tree_size=3)
    root = other.root
    bad_reply = make_message(session, client, bad, parent=root)
    below = make_message(session, client, good, parent=bad_reply)
    sibling = other.at(0)
    ballot = {"ranked_message_ids": [str(bad_reply.id), str(sibling.id)], "ranking": [0, 1]}
    session.add(
        MessageReaction(
            task_id=uuid.uuid4(),
            user_id=ranker.id,
            payload_type="RankingReactionPayload",
            payload=ballot,
            api_client_id=client.id,
            message_id=root.id,
        )
    )
    sibling.ranking_count = 1
    bad_reply.ranking_count = 1
    session.add(MessageEmoji(message_id=sibling.id, user_id=bad.id, emoji="+1"))
    session.add(MessageEmoji(message_id=sibling.id, user_id=good.id, emoji="+1"))
    sibling.emojis = {"+1": 2}
    session.add(
        TextLabels(
            user_id=bad.id,
            api_client_id=client.id,
            message_id=sibling.id,
            labels={"spam": 0.0},
            task_id=uuid.uuid4(),
        )
    )
    sibling.review_count = 3
    session.add(Task(user_id=bad.id, api_client_id=client.id, task_type="initial_prompt", payload={}))
    session.add(UserStats(time_frame="total", user_id=bad.id))
    session.flush()
    return PurgeWorld(bad.id, own.id, other.id, root.id, bad_reply.id, below.id, sibling.id)


def _snapshot(session: Session) -> dict[str, object]:
    messages = session.scalars(select(Message).order_by(Message.id)).all()
    return {
        "messages": [(m.id, m.children_count, m.ranking_count, m.review_count, m.emojis) for m in messages],
        "trees": session.scalar(select(func.count()).select_from(MessageTreeState)),
        "emojis": session.scalar(select(func.count()).select_from(MessageEmoji)),
        "reactions": session.scalar(select(func.count()).select_from(MessageReaction)),
        "labels": session.scalar(select(func.count()).select_from(TextLabels)),
        "users": [(u.id, u.enabled, u.deleted) for u in session.scalars(select(User).order_by(User.id))],
    }


def test_purge_preview_changes_nothing(app_client: TestClient, database: Database, keys: Keys) -> None:
    world = database.write(lambda s: _purge_world(s, keys))
    before = database.read(_snapshot)
    response = app_client.post(f"/api/v1/admin/purge_user/{world.bad}", params={"preview": True})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["preview"] is True
    assert result["counts"]["trees"] == 1 and result["counts"]["messages"] == 6
    assert result["before"]["all"] == 8 and result["after"]["all"] == 2
    assert database.read(_snapshot) == before


def test_purge_removes_trees_and_fixes_counts_elsewhere(
    app_client: TestClient, database: Database, keys: Keys
) -> None:
    world = database.write(lambda s: _purge_world(s, keys))
    response = app_client.post(f"/api/v1/admin/purge_user/{world.bad}", params={"preview": False})
    assert response.status_code == 200, response.text
    counts = response.json()["counts"]
    assert counts["trees"] == 1 and counts["affected_trees"] == 1 and counts["stats"] == 1

    def check(s: Session) -> None:
        assert s.get(MessageTreeState, world.own_tree) is None
        assert s.scalars(select(Message).where(Message.message_tree_id == world.own_tree)).all() == []
        assert s.get(Message, world.bad_reply) is None and s.get(Message, world.below_bad_reply) is None
        root, sibling = s.get(Message, world.other_root), s.get(Message, world.sibling)
        assert root is not None and root.children_count == 1
        assert sibling is not None and sibling.ranking_count == 0
        assert sibling.emojis == {"+1": 1} and sibling.review_count == 2
        assert s.scalar(select(func.count()).select_from(MessageReaction)) == 0
        assert s.scalars(select(Task).where(Task.user_id == world.bad)).all() == []
        assert s.scalars(select(UserStats).where(UserStats.user_id == world.bad)).all() == []
        bad = s.get(User, world.bad)
        assert bad is not None and bad.deleted and not bad.enabled

    database.read(check)


def test_purge_user_messages_keeps_prompts_unless_asked(
    app_client: TestClient, database: Database, keys: Keys
) -> None:
    world = database.write(lambda s: _purge_world(s, keys))
    response = app_client.post(
        f"/api/v1/admin/purge_user/{world.bad}/messages",
        params={"preview": False, "purge_initial_prompts": False},
    )
    assert response.status_code == 200, response.text
    assert response.json()["counts"]["trees"] == 0

    def check(s: Session) -> None:
        assert s.get(Message, world.own_tree) is not None  # the prompt survives ...
        assert s.get(Message, world.bad_reply) is None  # ... the reply elsewhere does not
        bad = s.get(User, world.bad)
        assert bad is not None and bad.enabled  # no ban here

    database.read(check)
    response = app_client.post(
        f"/api/v1/admin/purge_user/{world.bad}/messages",
        params={
            "preview": False,
            "purge_initial_prompts": True,
            "min_date": (utcnow() - timedelta(days=1)).isoformat(),
        },
    )
    assert response.json()["counts"]["trees"] == 1


def test_purge_needs_trusted_key_and_known_user(app_client: TestClient, keys: Keys) -> None:
    untrusted = app_client.post(
        f"/api/v1/admin/purge_user/{uuid.uuid4()}", headers={"X-API-Key": keys.untrusted}
    )
    assert untrusted.status_code == 403 and untrusted.json()["error_code"] == 2
    missing = app_client.post(f"/api/v1/admin/purge_user/{uuid.uuid4()}")
    assert missing.status_code == 404 and missing.json()["error_code"] == 4002


# --- merging users ---------------------------------------------------------------------------------


def test_merge_moves_messages_and_resolves_duplicate_emojis(
    app_client: TestClient, database: Database, keys: Keys
) -> None:
    def setup(s: Session) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID, uuid.UUID]:
        client = client_for_key(s, keys.trusted)
        dest, source, author = (make_db_user(s, client, n) for n in ("dest", "source", "author"))
        target = make_message(s, client, author)
        written = make_message(s, client, source)
        for user in (dest, source):
            s.add(MessageEmoji(message_id=target.id, user_id=user.id, emoji="heart_eyes"))
        s.add(MessageEmoji(message_id=target.id, user_id=source.id, emoji="clap"))
        target.emojis = {"heart_eyes": 2, "clap": 1}
        s.add(UserStats(time_frame="total", user_id=source.id))
        s.flush()
        return dest.id, source.id, target.id, written.id

    dest, source, target, written = database.write(setup)
    response = app_client.post(
        "/api/v1/admin/merge_users", json={"destination_user_id": str(dest), "source_user_ids": [str(source)]}
    )
    assert response.status_code == 204, response.text

    def check(s: Session) -> None:
        assert s.get(User, source) is None
        message = s.get(Message, written)
        assert message is not None and message.user_id == dest
        emojis = s.execute(
            select(MessageEmoji.user_id, MessageEmoji.emoji).where(MessageEmoji.message_id == target)
        )
        assert sorted(e for _, e in emojis) == ["clap", "heart_eyes"]
        target_message = s.get(Message, target)
        assert target_message is not None and target_message.emojis == {"heart_eyes": 1, "clap": 1}
        assert s.scalars(select(UserStats)).all() == []

    database.read(check)
    assert app_client.get(f"/api/v1/users/{source}").json()["error_code"] == 4002
    messages = app_client.get(f"/api/v1/users/{dest}/messages").json()
    assert [m["id"] for m in messages] == [str(written)]


def test_merge_into_unknown_user_is_404(app_client: TestClient) -> None:
    body = {"destination_user_id": str(uuid.uuid4()), "source_user_ids": [str(uuid.uuid4())]}
    response = app_client.post("/api/v1/admin/merge_users", json=body)
    assert response.status_code == 404 and response.json()["error_code"] == 4002


# --- the flagged-message queue ---------------------------------------------------------------------


def test_flagged_queue_lists_pages_and_marks_processed(
    app_client: TestClient, database: Database, keys: Keys
) -> None:
    def setup(s: Session) -> list[uuid.UUID]:
        client = client_for_key(s, keys.trusted)
        author = make_db_user(s, client)
        start = utcnow() - timedelta(hours=1)
        ids = []
        for i in range(5):
            message = make_message(s, client, author)
            s.add(FlaggedMessage(message_id=message.id, created_date=start + timedelta(minutes=i)))
            ids.append(message.id)
        s.flush()
        return ids

    ids = [str(i) for i in database.write(setup)]
    listed = app_client.get("/api/v1/admin/flagged_messages", params={"max_count": 10}).json()
    assert [f["message_id"] for f in listed] == ids and not any(f["processed"] for f in listed)

    first = app_client.get("/api/v1/admin/flagged_messages/cursor", params={"max_count": 2}).json()
    assert [f["message_id"] for f in first["items"]] == ids[:2] and first["prev"] is None
    second = app_client.get(
        "/api/v1/admin/flagged_messages/cursor", params={"max_count": 2, "after": first["next"]}
    ).json()
    assert [f["message_id"] for f in second["items"]] == ids[2:4]
    back = app_client.get(
        "/api/v1/admin/flagged_messages/cursor", params={"max_count": 2, "before": second["prev"]}
    ).json()
    assert [f["message_id"] for f in back["items"]] == ids[:2]
    bad = app_client.get("/api/v1/admin/flagged_messages/cursor", params={"after": "not-a-date"})
    assert bad.status_code == 400 and bad.json()["error_code"] == 101

    done = app_client.post(f"/api/v1/admin/flagged_messages/{ids[0]}/processed")
    assert done.status_code == 200 and done.json()["processed"] is True
    still_open = app_client.get("/api/v1/admin/flagged_messages", params={"processed": False}).json()
    assert [f["message_id"] for f in still_open] == ids[1:]
    missing = app_client.post(f"/api/v1/admin/flagged_messages/{uuid.uuid4()}/processed")
    assert missing.status_code == 404 and missing.json()["error_code"] == 2001
    untrusted = app_client.get("/api/v1/admin/flagged_messages", headers={"X-API-Key": keys.untrusted})
    assert untrusted.status_code == 403
