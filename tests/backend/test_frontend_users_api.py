"""`/api/v1/frontend_users`: upsert and lookup by ``(auth_method, username)``, moderation rights, messages."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from oasst.backend.db import Database
from tests.backend.factories import client_for_key, make_db_user, make_tree
from tests.conftest import Keys, make_user


def _untrusted(keys: Keys) -> dict[str, str]:
    return {"X-API-Key": keys.untrusted}


def test_upsert_then_lookup(app_client: TestClient) -> None:
    created = app_client.post("/api/v1/frontend_users/", json=make_user(1, "discord"))
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["id"] == "user-1" and body["auth_method"] == "discord" and body["enabled"] is True
    assert body["tos_acceptance_date"] is None

    renamed = app_client.post(
        "/api/v1/frontend_users/", json={**make_user(1, "discord"), "display_name": "New"}
    )
    assert renamed.json()["user_id"] == body["user_id"] and renamed.json()["display_name"] == "New"
    found = app_client.get("/api/v1/frontend_users/discord/user-1").json()
    assert found["user_id"] == body["user_id"] and found["display_name"] == "New"
    missing = app_client.get("/api/v1/frontend_users/google/user-1")
    assert missing.status_code == 404 and missing.json()["error_code"] == 4002


def test_users_are_namespaced_per_client(app_client: TestClient, keys: Keys) -> None:
    mine = app_client.post("/api/v1/frontend_users/", json=make_user(2)).json()
    theirs = app_client.post("/api/v1/frontend_users/", json=make_user(2), headers=_untrusted(keys)).json()
    assert mine["user_id"] != theirs["user_id"]
    seen = app_client.get("/api/v1/frontend_users/local/user-2", headers=_untrusted(keys)).json()
    assert seen["user_id"] == theirs["user_id"]
    response = app_client.get(f"/api/v1/users/{mine['user_id']}", headers=_untrusted(keys))
    assert response.status_code == 404 and response.json()["error_code"] == 4002


def test_untrusted_client_cannot_moderate_but_can_accept_tos(app_client: TestClient, keys: Keys) -> None:
    headers = _untrusted(keys)
    app_client.post("/api/v1/frontend_users/", json=make_user(3), headers=headers)
    for change in ({"enabled": False}, {"notes": "troll"}, {"show_on_leaderboard": False}):
        response = app_client.post(
            "/api/v1/frontend_users/", json={**make_user(3), **change}, headers=headers
        )
        assert response.status_code == 403 and response.json()["error_code"] == 2
    accepted = app_client.post(
        "/api/v1/frontend_users/", json={**make_user(3), "tos_acceptance": True}, headers=headers
    )
    assert accepted.status_code == 200 and accepted.json()["tos_acceptance_date"] is not None
    body = app_client.get("/api/v1/frontend_users/local/user-3", headers=headers).json()
    assert body["enabled"] is True and body["notes"] == ""


def test_trusted_client_bans_through_upsert(app_client: TestClient) -> None:
    app_client.post("/api/v1/frontend_users/", json=make_user(4))
    banned = app_client.post(
        "/api/v1/frontend_users/", json={**make_user(4), "enabled": False, "notes": "spam"}
    )
    assert banned.status_code == 200
    assert banned.json()["enabled"] is False and banned.json()["notes"] == "spam"
    assert app_client.get("/api/v1/frontend_users/local/user-4").json()["enabled"] is False


def test_deprecated_list(app_client: TestClient, keys: Keys) -> None:
    for n in ("a", "b", "c"):
        app_client.post("/api/v1/frontend_users/", json=make_user(n))
    app_client.post("/api/v1/frontend_users/", json=make_user("z"), headers=_untrusted(keys))
    names = [
        u["id"] for u in app_client.get("/api/v1/frontend_users/", params={"gte_username": "user-b"}).json()
    ]
    assert names == ["user-b", "user-c", "user-z"]
    own = app_client.get("/api/v1/frontend_users/", headers=_untrusted(keys)).json()
    assert [u["id"] for u in own] == ["user-z"]


def test_messages_of_a_frontend_user(app_client: TestClient, database: Database, keys: Keys) -> None:
    def setup(s: Session) -> list[uuid.UUID]:
        client = client_for_key(s, keys.trusted)
        author, other = make_db_user(s, client, "fm"), make_db_user(s, client, "fo")
        tree = make_tree(s, client, [author, other], shape=[[[]]])
        return [m.id for m in tree.messages]

    root, reply, second = database.write(setup)
    listed = app_client.get("/api/v1/frontend_users/local/user-fm/messages").json()
    assert [m["id"] for m in listed] == [str(second), str(root)]
    assert all(m["user_is_author"] for m in listed)
    page = app_client.get(
        "/api/v1/frontend_users/local/user-fm/messages/cursor", params={"max_count": 1}
    ).json()
    assert [m["id"] for m in page["items"]] == [str(root)] and page["next"]
    bad = app_client.get(
        "/api/v1/frontend_users/local/user-fm/messages/cursor", params={"after": "yesterday"}
    )
    assert bad.status_code == 400 and bad.json()["error_code"] == 101

    refused = app_client.delete("/api/v1/frontend_users/local/user-fm/messages", headers=_untrusted(keys))
    assert refused.status_code == 403
    assert app_client.delete("/api/v1/frontend_users/local/user-fm/messages").status_code == 204
    assert app_client.get("/api/v1/frontend_users/local/user-fm/messages").json() == []
    other = app_client.get(
        "/api/v1/frontend_users/local/user-fo/messages", params={"include_deleted": True}
    ).json()
    assert [m["id"] for m in other] == [str(reply)] and other[0]["deleted"] is True
    missing = app_client.delete("/api/v1/frontend_users/local/nobody/messages")
    assert missing.status_code == 404 and missing.json()["error_code"] == 4002
