"""`/api/v1/users`: lookups by global id, keyset lists, ban and anonymise, a user's messages and stats."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from oasst.backend.db import Database
from oasst.backend.models import Message, MessageTreeState, TreeState
from tests.backend.factories import client_for_key, make_db_user, make_message, make_tree
from tests.conftest import Keys


def _user(database: Database, key: str, n: int | str) -> uuid.UUID:
    return database.write(lambda s: make_db_user(s, client_for_key(s, key), n).id)


def _untrusted(keys: Keys) -> dict[str, str]:
    return {"X-API-Key": keys.untrusted}


def test_get_user_by_id(app_client: TestClient, database: Database, keys: Keys) -> None:
    user_id = _user(database, keys.untrusted, 1)
    body = app_client.get(f"/api/v1/users/{user_id}").json()
    assert body["user_id"] == str(user_id) and body["id"] == "user-1" and body["auth_method"] == "local"
    assert app_client.get(f"/api/v1/users/{user_id}", headers=_untrusted(keys)).json()["id"] == "user-1"


def test_untrusted_client_cannot_see_another_clients_user(
    app_client: TestClient, database: Database, keys: Keys
) -> None:
    foreign = _user(database, keys.trusted, "web")
    response = app_client.get(f"/api/v1/users/{foreign}", headers=_untrusted(keys))
    assert response.status_code == 404 and response.json()["error_code"] == 4002
    trusted_client_id = database.read(lambda s: client_for_key(s, keys.trusted).id)
    response = app_client.get(
        f"/api/v1/users/{foreign}", params={"api_client_id": str(trusted_client_id)}, headers=_untrusted(keys)
    )
    assert response.status_code == 403 and response.json()["error_code"] == 2
    listed = app_client.get("/api/v1/users/by_username", headers=_untrusted(keys)).json()
    assert listed == []


def test_lists_by_username_and_display_name(app_client: TestClient, database: Database, keys: Keys) -> None:
    for n in ("ann", "bob", "bea", "carl"):
        _user(database, keys.trusted, n)
    names = [u["id"] for u in app_client.get("/api/v1/users/by_username").json()]
    assert names == ["user-ann", "user-bea", "user-bob", "user-carl"]
    searched = app_client.get("/api/v1/users/by_username", params={"search_text": "B"}).json()
    assert [u["id"] for u in searched] == ["user-bea", "user-bob"]
    bounded = app_client.get(
        "/api/v1/users/by_display_name", params={"gte_display_name": "User b", "desc": True, "max_count": 2}
    ).json()
    assert [u["display_name"] for u in bounded] == ["User carl", "User bob"]
    literal = app_client.get("/api/v1/users/by_username", params={"search_text": "%"}).json()
    assert literal == []


def test_cursor_pagination_round_trip(app_client: TestClient, database: Database, keys: Keys) -> None:
    for n in range(7):
        _user(database, keys.trusted, f"p{n}")
    expected = [f"user-p{n}" for n in range(7)]
    pages: list[list[str]] = []
    page = app_client.get("/api/v1/users/cursor", params={"max_count": 3}).json()
    assert page["prev"] is None and page["sort_key"] == "username" and page["order"] == "asc"
    pages.append([u["id"] for u in page["items"]])
    while page["next"]:
        page = app_client.get("/api/v1/users/cursor", params={"max_count": 3, "after": page["next"]}).json()
        pages.append([u["id"] for u in page["items"]])
    assert pages == [expected[:3], expected[3:6], expected[6:]]
    back = app_client.get("/api/v1/users/cursor", params={"max_count": 3, "before": page["prev"]}).json()
    assert [u["id"] for u in back["items"]] == expected[3:6]
    by_display = app_client.get(
        "/api/v1/users/cursor", params={"sort_key": "display_name", "max_count": 10}
    ).json()
    assert [u["display_name"] for u in by_display["items"]] == [f"User p{n}" for n in range(7)]


def test_cursor_errors(app_client: TestClient) -> None:
    response = app_client.get("/api/v1/users/cursor", params={"sort_key": "email"})
    assert response.status_code == 400 and response.json()["error_code"] == 100
    response = app_client.get("/api/v1/users/cursor", params={"after": "not-a-uuid$user-1"})
    assert response.status_code == 400 and response.json()["error_code"] == 101


def test_ban_with_put_halts_lottery_prompts(app_client: TestClient, database: Database, keys: Keys) -> None:
    def setup(s: Session) -> tuple[uuid.UUID, uuid.UUID]:
        client = client_for_key(s, keys.trusted)
        user = make_db_user(s, client, "banned")
        tree = make_tree(s, client, user, shape=[], state=TreeState.PROMPT_LOTTERY_WAITING)
        return user.id, tree.id

    user_id, tree_id = database.write(setup)
    refused = app_client.put(f"/api/v1/users/{user_id}", params={"enabled": False}, headers=_untrusted(keys))
    assert refused.status_code == 403 and refused.json()["error_code"] == 2

    response = app_client.put(f"/api/v1/users/{user_id}", params={"enabled": False, "notes": "spam"})
    assert response.status_code == 204
    body = app_client.get(f"/api/v1/users/{user_id}").json()
    assert body["enabled"] is False and body["notes"] == "spam"
    state = database.read(lambda s: s.get(MessageTreeState, tree_id))
    assert state is not None and state.state == TreeState.HALTED_BY_MODERATOR

    app_client.put(f"/api/v1/users/{user_id}", params={"enabled": True, "tos_acceptance": True})
    body = app_client.get(f"/api/v1/users/{user_id}").json()
    assert body["enabled"] is True and body["tos_acceptance_date"] is not None
    missing = app_client.put(f"/api/v1/users/{uuid.uuid4()}", params={"enabled": False})
    assert missing.status_code == 404 and missing.json()["error_code"] == 4002


def test_delete_anonymises(app_client: TestClient, database: Database, keys: Keys) -> None:
    user_id = _user(database, keys.trusted, "leaving")
    assert app_client.delete(f"/api/v1/users/{user_id}", headers=_untrusted(keys)).status_code == 403
    assert app_client.delete(f"/api/v1/users/{user_id}").status_code == 204
    body = app_client.get(f"/api/v1/users/{user_id}").json()
    assert body["deleted"] is True and body["display_name"] == "Deleted User"
    assert body["id"] == f"deleted_{user_id}" and body["show_on_leaderboard"] is False
    # the old username is free again
    assert app_client.get("/api/v1/frontend_users/local/user-leaving").status_code == 404


def test_user_messages_list_page_and_delete(app_client: TestClient, database: Database, keys: Keys) -> None:
    def setup(s: Session) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID, uuid.UUID]:
        client = client_for_key(s, keys.trusted)
        author, other = make_db_user(s, client, "author"), make_db_user(s, client, "other")
        tree = make_tree(s, client, [author, other], shape=[[[]], []])
        return author.id, tree.id, tree.at(0).id, tree.at(0, 0).id

    author, root, other_reply, author_reply = database.write(setup)
    listed = app_client.get(f"/api/v1/users/{author}/messages", params={"desc": False}).json()
    assert [m["id"] for m in listed] == [str(root), str(author_reply)]
    page = app_client.get(f"/api/v1/users/{author}/messages/cursor", params={"max_count": 1}).json()
    assert [m["id"] for m in page["items"]] == [str(root)] and page["next"]
    page = app_client.get(
        f"/api/v1/users/{author}/messages/cursor", params={"max_count": 1, "after": page["next"]}
    ).json()
    assert [m["id"] for m in page["items"]] == [str(author_reply)]
    assert app_client.delete(f"/api/v1/users/{author}/messages", headers=_untrusted(keys)).status_code == 403

    assert app_client.delete(f"/api/v1/users/{author}/messages").status_code == 204
    deleted = database.read(lambda s: {m.id: m.deleted for m in s.query(Message).all()})
    assert all(deleted.values()) and other_reply in deleted  # the root went, so everything below it too
    assert app_client.get(f"/api/v1/users/{author}/messages").json() == []
    with_deleted = app_client.get(f"/api/v1/users/{author}/messages", params={"include_deleted": True}).json()
    assert len(with_deleted) == 2


def test_delete_messages_of_a_replier_keeps_the_tree(
    app_client: TestClient, database: Database, keys: Keys
) -> None:
    def setup(s: Session) -> tuple[uuid.UUID, uuid.UUID]:
        client = client_for_key(s, keys.trusted)
        owner, replier = make_db_user(s, client, "owner"), make_db_user(s, client, "replier")
        root = make_message(s, client, owner)
        make_message(s, client, owner, parent=root)
        make_message(s, client, replier, parent=root)
        return replier.id, root.id

    replier, root = database.write(setup)
    assert app_client.delete(f"/api/v1/users/{replier}/messages").status_code == 204
    root_row = database.read(lambda s: s.get(Message, root))
    assert root_row is not None and not root_row.deleted and root_row.children_count == 1


def test_user_stats(app_client: TestClient, database: Database, keys: Keys) -> None:
    user_id = _user(database, keys.trusted, "stats")
    stats = app_client.get(f"/api/v1/users/{user_id}/stats").json()
    assert set(stats) == {"day", "week", "month", "total"}
    assert stats["total"]["user_id"] == str(user_id)
    week = app_client.get(f"/api/v1/users/{user_id}/stats/week").json()
    assert week["leader_score"] == 0
    window = app_client.get(f"/api/v1/users/{user_id}/stats/week/window", params={"window_size": 3})
    assert window.status_code == 200 and window.json() is None
    assert app_client.get(f"/api/v1/users/{user_id}/stats/year").status_code == 422
