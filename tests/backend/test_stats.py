"""System stats, tree-manager stats and the dashboard's cached stats."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from oasst.backend.db import Database
from oasst.backend.errors import ErrorCode
from oasst.backend.models import Message, TreeState, utcnow
from tests.backend.factories_stats import StatsFactory, build
from tests.conftest import Keys

STATS = "/api/v1/stats"


def _scenario(f: StatsFactory) -> dict[str, Message]:
    """Two trees: an active English one (root + 2 replies, one deleted) and an exported German one."""
    alice = f.user("alice", tos_acceptance_date=utcnow())
    f.user("bob", tos_acceptance_date=utcnow(), enabled=False)
    f.user("carol")
    growing = f.message(alice, review_result=True)
    f.tree_state(growing, TreeState.GROWING, active=True)
    reply = f.message(alice, parent=growing, review_result=True)
    f.message(alice, parent=growing, deleted=True, review_result=True)
    done = f.message(alice, lang="de", review_result=True)
    f.tree_state(done, TreeState.READY_FOR_EXPORT)
    f.message(None, parent=done, lang="de", review_result=True, synthetic=True)
    f.message(alice, parent=done, lang="de", review_result=False)
    return {"growing": growing, "reply": reply, "done": done}


def test_system_stats(app_client: TestClient, database: Database, keys: Keys) -> None:
    build(database, keys.trusted, _scenario)
    response = app_client.get(f"{STATS}/")
    assert response.status_code == 200
    assert response.json() == {
        "all": 6,
        "active": 5,
        "active_by_lang": {"en": 2, "de": 3},
        "deleted": 1,
        "message_trees": 2,
    }


def test_tree_manager_stats(app_client: TestClient, database: Database, keys: Keys) -> None:
    trees = build(database, keys.trusted, _scenario)

    assert app_client.get(f"{STATS}/tree_manager/state_counts").json() == {
        "growing": 1,
        "ready_for_export": 1,
    }
    active = app_client.get(f"{STATS}/tree_manager/message_counts").json()
    assert len(active) == 1
    assert {k: active[0][k] for k in ("message_tree_id", "state", "depth", "count", "goal_tree_size")} == {
        "message_tree_id": str(trees["growing"].id),
        "state": "growing",
        "depth": 1,
        "count": 2,
        "goal_tree_size": 12,
    }
    assert active[0]["oldest"] <= active[0]["youngest"]
    every = app_client.get(f"{STATS}/tree_manager/message_counts", params={"only_active": False}).json()
    assert sorted(t["count"] for t in every) == [2, 3]
    summary = app_client.get(f"{STATS}/tree_manager").json()
    assert summary["state_counts"] == {"growing": 1, "ready_for_export": 1}
    assert summary["message_counts"] == active


def test_cached_stats_are_404_until_computed(app_client: TestClient, database: Database, keys: Keys) -> None:
    build(database, keys.trusted, _scenario)
    missing = app_client.get(f"{STATS}/cached/human_messages_by_lang")
    assert (missing.status_code, missing.json()["error_code"]) == (404, ErrorCode.CACHED_STATS_NOT_AVAILABLE)
    assert app_client.get(f"{STATS}/cached").json() == {"stats_by_name": {}}

    assert app_client.post(f"{STATS}/cached/update").status_code == 204

    def cached(name: str) -> Any:
        response = app_client.get(f"{STATS}/cached/{name}")
        assert response.status_code == 200
        body = response.json()
        assert body["name"] == name and body["last_updated"]
        return body["stats"]

    assert cached("human_messages_by_lang") == {"en": 2, "de": 1}
    assert cached("human_messages_by_role") == {"prompter": 2, "assistant": 1}
    assert cached("message_trees_by_state") == {"growing": 1, "ready_for_export": 1}
    assert cached("message_trees_states_by_lang") == [
        {"lang": "de", "state": "ready_for_export", "count": 1},
        {"lang": "en", "state": "growing", "count": 1},
    ]
    assert cached("users_accepted_tos") == {"count": 1}
    every = app_client.get(f"{STATS}/cached").json()["stats_by_name"]
    assert sorted(every) == sorted(
        [
            "human_messages_by_lang",
            "human_messages_by_role",
            "message_trees_by_state",
            "message_trees_states_by_lang",
            "users_accepted_tos",
        ]
    )

    # a second update replaces the values in place
    build(database, keys.trusted, lambda f: f.message(f.user("dora"), lang="fr", review_result=True))
    assert app_client.post(f"{STATS}/cached/update").status_code == 204
    assert cached("human_messages_by_lang") == {"en": 2, "de": 1, "fr": 1}


def test_unknown_cached_stats_name_is_a_validation_error(app_client: TestClient) -> None:
    response = app_client.get(f"{STATS}/cached/everything")
    assert (response.status_code, response.json()["error_code"]) == (422, ErrorCode.REQUEST_VALIDATION_FAILED)


def test_trusted_only_endpoints_refuse_the_untrusted_key(app_client: TestClient, keys: Keys) -> None:
    untrusted = {"X-API-Key": keys.untrusted}
    for method, path in [
        ("GET", f"{STATS}/"),
        ("GET", f"{STATS}/tree_manager"),
        ("GET", f"{STATS}/tree_manager/state_counts"),
        ("GET", f"{STATS}/tree_manager/message_counts"),
        ("POST", f"{STATS}/cached/update"),
    ]:
        response = app_client.request(method, path, headers=untrusted)
        assert (response.status_code, response.json()["error_code"]) == (
            403,
            ErrorCode.API_CLIENT_NOT_AUTHORIZED,
        )
    assert app_client.get(f"{STATS}/cached", headers=untrusted).status_code == 200
