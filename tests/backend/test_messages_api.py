"""Reading messages: lookups, navigation in a tree, listings, keyset pages, search, frontend ids."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from oasst.backend.db import Database
from oasst.backend.models import Message, MessageEmoji, utcnow
from tests.backend.factories import World, make_message, make_world
from tests.conftest import Keys

API = "/api/v1/messages"


@pytest.fixture
def world(database: Database, keys: Keys) -> World:
    return database.write(lambda s: make_world(s, keys))


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [m["id"] for m in items]


def test_get_message_has_the_original_fields(app_client: TestClient, world: World) -> None:
    m = world.tree.at(0)
    body = app_client.get(f"{API}/{m.id}").json()
    assert body["id"] == str(m.id)
    assert body["parent_id"] == str(world.tree.root.id)
    assert body["message_tree_id"] == str(world.tree.id)
    assert body["text"] == "text 1"
    assert body["is_assistant"] is True
    assert body["frontend_message_id"] == m.frontend_message_id
    assert body["review_result"] is True
    assert body["deleted"] is False
    assert body["emojis"] == {} and body["user_emojis"] == []


def test_conversation_runs_from_root_to_the_message(app_client: TestClient, world: World) -> None:
    t = world.tree
    body = app_client.get(f"{API}/{t.at(0, 0, 0).id}/conversation").json()
    assert ids(body["messages"]) == [
        str(t.root.id),
        str(t.at(0).id),
        str(t.at(0, 0).id),
        str(t.at(0, 0, 0).id),
    ]
    assert [m["is_assistant"] for m in body["messages"]] == [False, True, False, True]


def test_tree_hides_deleted_and_optionally_unaccepted(
    app_client: TestClient, database: Database, world: World
) -> None:
    t = world.tree

    def mark(s: Any) -> None:
        s.get(Message, t.at(1).id).review_result = False
        s.get(Message, t.at(0, 1).id).deleted = True

    database.write(mark)
    body = app_client.get(f"{API}/{t.at(0).id}/tree").json()
    assert body["id"] == str(t.id)
    assert len(body["messages"]) == 5 and str(t.at(0, 1).id) not in ids(body["messages"])
    accepted = app_client.get(f"{API}/{t.root.id}/tree", params={"include_spam": False}).json()
    assert str(t.at(1).id) not in ids(accepted["messages"]) and len(accepted["messages"]) == 4
    everything = app_client.get(f"{API}/{t.root.id}/tree", params={"include_deleted": True}).json()
    assert len(everything["messages"]) == 6


def test_children_and_descendants(app_client: TestClient, world: World) -> None:
    t = world.tree
    children = app_client.get(f"{API}/{t.root.id}/children").json()
    assert ids(children) == [str(t.at(0).id), str(t.at(1).id)]
    sub = app_client.get(f"{API}/{t.at(0).id}/descendants").json()
    assert sub["id"] == str(t.at(0).id)
    assert ids(sub["messages"]) == [str(t.at(0, 0).id), str(t.at(0, 0, 0).id), str(t.at(0, 1).id)]
    assert app_client.get(f"{API}/{t.at(1).id}/children").json() == []


def test_longest_conversation_and_max_children(app_client: TestClient, world: World) -> None:
    t = world.tree
    longest = app_client.get(f"{API}/{t.at(1).id}/longest_conversation_in_tree").json()
    assert ids(longest["messages"]) == [str(m.id) for m in (t.root, t.at(0), t.at(0, 0), t.at(0, 0, 0))]
    widest = app_client.get(f"{API}/{t.at(1).id}/max_children_in_tree").json()
    assert widest["id"] == str(t.root.id)  # the root and its first reply both have two; the older wins
    assert ids(widest["messages"]) == [str(t.root.id), str(t.at(0).id), str(t.at(1).id)]


def test_tree_state(app_client: TestClient, world: World) -> None:
    body = app_client.get(f"{API}/{world.tree.at(0, 0).id}/tree/state").json()
    assert body["message_tree_id"] == str(world.tree.id)
    assert body["state"] == "growing" and body["active"] is True
    assert body["goal_tree_size"] == 12 and body["max_depth"] == 3 and body["max_children_count"] == 3


@pytest.mark.parametrize(
    "suffix",
    [
        "",
        "/conversation",
        "/tree",
        "/children",
        "/descendants",
        "/longest_conversation_in_tree",
        "/max_children_in_tree",
        "/tree/state",
    ],
)
def test_unknown_ids_are_not_found_and_foreign_ids_hidden(
    app_client: TestClient, world: World, suffix: str
) -> None:
    unknown = app_client.get(f"{API}/00000000-0000-4000-8000-000000000000{suffix}")
    assert unknown.status_code == 404 and unknown.json()["error_code"] == 2001
    headers = {"X-API-Key": world.untrusted_key}
    foreign = app_client.get(f"{API}/{world.tree.root.id}{suffix}", headers=headers)
    assert foreign.status_code == 404 and foreign.json()["error_code"] == 2001
    assert app_client.get(f"{API}/{world.own.id}{suffix}", headers=headers).status_code == 200


def test_malformed_id_is_a_validation_error(app_client: TestClient, world: World) -> None:
    response = app_client.get(f"{API}/not-a-uuid/children")
    assert response.status_code == 422 and response.json()["error_code"] == 102


def test_untrusted_listing_shows_only_its_own_messages(app_client: TestClient, world: World) -> None:
    headers = {"X-API-Key": world.untrusted_key}
    listed = app_client.get(f"{API}/", headers=headers).json()
    assert ids(listed) == [str(world.own.id)]
    page = app_client.get(f"{API}/cursor", headers=headers).json()
    assert ids(page["items"]) == [str(world.own.id)]
    foreign = app_client.get(f"{API}/", headers=headers, params={"api_client_id": str(world.trusted.id)})
    assert foreign.status_code == 403 and foreign.json()["error_code"] == 2
    assert len(app_client.get(f"{API}/", params={"max_count": 100}).json()) == 7  # trusted sees all


def test_listing_filters(app_client: TestClient, database: Database, world: World) -> None:
    t = world.tree
    newest_first = app_client.get(f"{API}/", params={"max_count": 3}).json()
    assert ids(newest_first) == [str(world.own.id), str(t.at(1).id), str(t.at(0, 1).id)]
    oldest_first = app_client.get(f"{API}/", params={"desc": False, "max_count": 2}).json()
    assert ids(oldest_first) == [str(t.root.id), str(t.at(0).id)]
    roots = app_client.get(f"{API}/", params={"only_roots": True}).json()
    assert set(ids(roots)) == {str(t.root.id), str(world.own.id)}
    by_alice = app_client.get(f"{API}/", params={"auth_method": "local", "username": "user-alice"}).json()
    assert {m["user_id"] for m in by_alice} == {str(world.alice.id)} and len(by_alice) == 3
    by_client = app_client.get(f"{API}/", params={"api_client_id": str(world.untrusted.id)}).json()
    assert ids(by_client) == [str(world.own.id)]
    window = app_client.get(
        f"{API}/",
        params={
            "start_date": t.at(0).created_date.isoformat(),
            "end_date": t.at(0, 0).created_date.isoformat(),
        },
    ).json()
    assert ids(window) == [str(t.at(0, 0).id), str(t.at(0).id)]

    database.write(lambda s: setattr(s.get(Message, t.at(1).id), "deleted", True))
    assert str(t.at(1).id) not in ids(app_client.get(f"{API}/", params={"max_count": 100}).json())
    with_deleted = app_client.get(f"{API}/", params={"max_count": 100, "allow_deleted": True}).json()
    assert str(t.at(1).id) in ids(with_deleted)
    assert app_client.get(f"{API}/", params={"lang": "de"}).json() == []


def test_listing_rejects_bad_parameters(app_client: TestClient, world: World) -> None:
    half_user = app_client.get(f"{API}/", params={"username": "user-alice"})
    assert half_user.status_code == 400 and half_user.json()["error_code"] == 2012
    too_many = app_client.get(f"{API}/", params={"max_count": 1001})
    assert too_many.status_code == 422 and too_many.json()["error_code"] == 102


def _walk(client: TestClient, params: dict[str, Any]) -> tuple[list[list[str]], dict[str, Any]]:
    """Follow ``next`` from the first page to the last; returns the pages and the last page body."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = dict(params, **({"after": cursor} if cursor else {}))
        body = client.get(f"{API}/cursor", params=query).json()
        pages.append(ids(body["items"]))
        cursor = body["next"]
        if cursor is None:
            return pages, body
        assert len(pages) < 50


@pytest.mark.parametrize("desc", [False, True])
def test_cursor_pages_cover_everything_once_both_ways(
    app_client: TestClient, database: Database, world: World, desc: bool
) -> None:
    same_time = utcnow() - timedelta(minutes=5)

    def add_ties(s: Any) -> None:  # several messages with the very same created_date
        for i in range(4):
            make_message(s, world.trusted, world.bob, text=f"tie {i}", created_date=same_time)

    database.write(add_ties)
    listed = app_client.get(f"{API}/", params={"max_count": 1000, "desc": desc}).json()
    expected = ids(listed)
    assert len(expected) == 11

    pages, last = _walk(app_client, {"max_count": 3, "desc": desc})
    assert [len(p) for p in pages] == [3, 3, 3, 2]
    assert [i for p in pages for i in p] == expected
    assert last["order"] == ("desc" if desc else "asc") and last["sort_key"] == "created_date"

    back: list[list[str]] = [ids(last["items"])]
    cursor = last["prev"]
    while cursor is not None:
        body = app_client.get(f"{API}/cursor", params={"max_count": 3, "desc": desc, "before": cursor}).json()
        back.insert(0, ids(body["items"]))
        cursor = body["prev"]
    assert back == pages


def test_cursor_beyond_the_end_is_empty(app_client: TestClient, world: World) -> None:
    _pages, last = _walk(app_client, {"max_count": 100})
    end = f"{last['items'][-1]['id']}${last['items'][-1]['created_date']}"
    body = app_client.get(f"{API}/cursor", params={"after": end}).json()
    assert body["items"] == [] and body["prev"] == end and body["next"] is None


@pytest.mark.parametrize("cursor", ["yesterday", "not-a-uuid$2024-01-01T00:00:00", "%s$garbage"])
def test_invalid_cursor(app_client: TestClient, world: World, cursor: str) -> None:
    value = cursor % world.own.id if "%s" in cursor else cursor
    response = app_client.get(f"{API}/cursor", params={"before": value})
    assert response.status_code == 400 and response.json()["error_code"] == 101


def test_search_finds_words(app_client: TestClient, database: Database, world: World) -> None:
    texts = ["The quick brown fox", "Lazy dogs sleep all day", "A FOX in socks"]

    def add(s: Any) -> list[str]:
        return [str(make_message(s, world.trusted, world.bob, text=t).id) for t in texts]

    made = database.write(add)
    fox = app_client.get(f"{API}/cursor", params={"search_query": "fox"}).json()
    assert sorted(ids(fox["items"])) == sorted([made[0], made[2]])
    both = app_client.get(f"{API}/cursor", params={"search_query": "quick fox"}).json()
    assert ids(both["items"]) == [made[0]]
    assert app_client.get(f"{API}/cursor", params={"search_query": "zebra"}).json()["items"] == []


def test_include_user_adds_the_author(app_client: TestClient, world: World) -> None:
    body = app_client.get(f"{API}/cursor", params={"include_user": True, "only_roots": True}).json()
    users = {m["id"]: m["user"] for m in body["items"]}
    assert users[str(world.tree.root.id)]["id"] == "user-alice"
    assert users[str(world.tree.root.id)]["user_id"] == str(world.alice.id)
    plain = app_client.get(f"{API}/cursor").json()
    assert all(m["user"] is None for m in plain["items"])


def test_reader_header_adds_own_emojis_and_authorship(
    app_client: TestClient, database: Database, world: World
) -> None:
    t = world.tree
    database.write(lambda s: s.add(MessageEmoji(message_id=t.at(0).id, user_id=world.alice.id, emoji="+1")))
    headers = {"x-oasst-user": "local:user-alice"}
    conv = app_client.get(f"{API}/{t.at(0).id}/conversation", headers=headers).json()["messages"]
    assert [m["user_is_author"] for m in conv] == [True, False]  # alice wrote the root, bob the reply
    assert conv[1]["user_emojis"] == ["+1"]
    single = app_client.get(f"{API}/{t.at(0).id}", headers={"x-oasst-user": "local:user-bob"}).json()
    assert single["user_is_author"] is True and single["user_emojis"] == []
    anonymous = app_client.get(f"{API}/{t.at(0).id}").json()
    assert anonymous["user_is_author"] is None


def test_frontend_messages_use_the_clients_own_ids(app_client: TestClient, world: World) -> None:
    t = world.tree
    fm = "/api/v1/frontend_messages"
    body = app_client.get(f"{fm}/{t.at(0, 0).frontend_message_id}").json()
    assert body["id"] == str(t.at(0, 0).id)
    conv = app_client.get(f"{fm}/{t.at(0, 0).frontend_message_id}/conversation").json()
    assert len(conv["messages"]) == 3
    tree = app_client.get(f"{fm}/{t.at(0, 0).frontend_message_id}/tree").json()
    assert tree["id"] == str(t.id) and len(tree["messages"]) == 6
    children = app_client.get(f"{fm}/{t.root.frontend_message_id}/children").json()
    assert len(children) == 2
    sub = app_client.get(f"{fm}/{t.at(0).frontend_message_id}/descendants").json()
    assert len(sub["messages"]) == 3
    longest = app_client.get(f"{fm}/{t.at(1).frontend_message_id}/longest_conversation_in_tree").json()
    assert len(longest["messages"]) == 4
    widest = app_client.get(f"{fm}/{t.at(1).frontend_message_id}/max_children_in_tree").json()
    assert widest["id"] == str(t.root.id)

    other_client = app_client.get(
        f"{fm}/{t.root.frontend_message_id}", headers={"X-API-Key": world.untrusted_key}
    )
    assert other_client.status_code == 404 and other_client.json()["error_code"] == 2001
    own = app_client.get(f"{fm}/u-1", headers={"X-API-Key": world.untrusted_key}).json()
    assert own["id"] == str(world.own.id)
    assert app_client.get(f"{fm}/no-such-id/tree").json()["error_code"] == 2001


def test_untrusted_user_header_of_another_client_is_ignored(app_client: TestClient, world: World) -> None:
    """Users are namespaced per client: the untrusted client's "user-alice" is not the trusted one's."""
    headers = {"X-API-Key": world.untrusted_key, "x-oasst-user": "local:user-carol"}
    body = app_client.get(f"{API}/{world.own.id}", headers=headers).json()
    assert body["user_is_author"] is True
    alice_elsewhere = {"X-API-Key": world.untrusted_key, "x-oasst-user": "local:user-alice"}
    assert app_client.get(f"{API}/{world.own.id}", headers=alice_elsewhere).json()["user_is_author"] is None
