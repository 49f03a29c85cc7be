"""Chat CRUD, the tree rules, ownership, search, hide/delete, export, votes, reports, draft picks."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from oasst.inference.protocol import FinishReason, Usage
from oasst.inference.server.db import Database
from oasst.inference.server.errors import ErrorCode
from oasst.inference.server.services import work
from oasst.inference.server.services.export import iter_opted_in_chats
from tests.inference.conftest import user_headers

ALICE = user_headers("alice")
BOB = user_headers("bob")


def _chat(client: TestClient, headers: dict[str, str] = ALICE, **body: Any) -> dict[str, Any]:
    r = client.post("/chats", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _say(client: TestClient, chat_id: str, content: str, parent_id: str | None = None) -> Any:
    return client.post(
        f"/chats/{chat_id}/messages", json={"content": content, "parent_id": parent_id}, headers=ALICE
    )


def _ask(client: TestClient, chat_id: str, parent_id: str, **body: Any) -> list[dict[str, Any]]:
    r = client.post(
        f"/chats/{chat_id}/assistant-messages", json={"parent_id": parent_id, **body}, headers=ALICE
    )
    assert r.status_code == 202, r.text
    return list(r.json()["messages"])


def _complete(db: Database, message_id: str, text: str) -> None:
    """Factory: finish an assistant message as a worker would."""
    db.write(lambda s: work.start_work(s, message_id, session_id="s1", worker_key_id="k1", deadline_s=10))
    db.write(
        lambda s: work.complete_work(
            s, message_id, session_id="s1", text=text, finish_reason=FinishReason.stop, usage=Usage()
        )
    )


def test_chat_crud_and_listing(client: TestClient) -> None:
    a = _chat(client, system_prompt="Be brief.", custom_instructions="I am a gardener.")
    b = _chat(client, title="Second")
    assert a["allow_data_use"] is True and a["hidden"] is False and a["system_prompt"] == "Be brief."
    page = client.get("/chats", headers=ALICE).json()
    assert [c["id"] for c in page["items"]] == [b["id"], a["id"]]  # newest first

    r = client.patch(f"/chats/{a['id']}", json={"title": "Renamed", "hidden": True}, headers=ALICE)
    assert r.status_code == 200 and r.json()["title"] == "Renamed" and r.json()["hidden"] is True
    assert [c["id"] for c in client.get("/chats", headers=ALICE).json()["items"]] == [b["id"]]
    hidden = client.get("/chats", params={"include_hidden": True}, headers=ALICE).json()["items"]
    assert {c["id"] for c in hidden} == {a["id"], b["id"]}

    first = client.get("/chats", params={"limit": 1, "include_hidden": True}, headers=ALICE).json()
    assert len(first["items"]) == 1 and first["next"]
    second = client.get(
        "/chats", params={"limit": 1, "include_hidden": True, "cursor": first["next"]}, headers=ALICE
    ).json()
    assert second["items"][0]["id"] == a["id"] and second["next"] is None

    assert client.post("/chats/hide-all", headers=ALICE).status_code == 204
    assert client.get("/chats", headers=ALICE).json()["items"] == []

    assert client.delete(f"/chats/{b['id']}", headers=ALICE).status_code == 204
    r = client.get(f"/chats/{b['id']}", headers=ALICE)
    assert r.status_code == 404 and r.json()["error_code"] == ErrorCode.CHAT_NOT_FOUND


def test_other_users_chats_are_not_found(client: TestClient) -> None:
    chat = _chat(client)
    root = _say(client, chat["id"], "secret question").json()
    for method, path in [
        ("GET", f"/chats/{chat['id']}"),
        ("PATCH", f"/chats/{chat['id']}"),
        ("DELETE", f"/chats/{chat['id']}"),
        ("GET", f"/chats/{chat['id']}/export"),
        ("GET", f"/chats/{chat['id']}/messages/{root['id']}"),
    ]:
        r = client.request(method, path, headers=BOB, json={} if method == "PATCH" else None)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error_code"] == ErrorCode.CHAT_NOT_FOUND
    r = client.post(f"/chats/{chat['id']}/messages", json={"content": "hi"}, headers=BOB)
    assert r.status_code == 404
    assert client.get("/chats", headers=BOB).json()["items"] == []


def test_tree_rules_branches_and_limits(client: TestClient, inf_db: Database) -> None:
    chat = _chat(client)["id"]
    root = _say(client, chat, "What is a tree?").json()
    assert root["state"] == "manual" and root["role"] == "user"
    assert client.get(f"/chats/{chat}", headers=ALICE).json()["title"] == "What is a tree?"

    # a user message cannot answer a user message, nor an unfinished assistant message
    assert _say(client, chat, "reply to myself", root["id"]).json()["error_code"] == ErrorCode.INVALID_PARENT
    first, regenerated = _ask(client, chat, root["id"]), _ask(client, chat, root["id"])
    assert first[0]["state"] == "pending" and first[0]["parent_id"] == root["id"]
    assert _say(client, chat, "too early", first[0]["id"]).json()["error_code"] == ErrorCode.INVALID_PARENT
    # an assistant message answers a user message only
    r = client.post(f"/chats/{chat}/assistant-messages", json={"parent_id": first[0]["id"]}, headers=ALICE)
    assert r.json()["error_code"] == ErrorCode.INVALID_PARENT

    _complete(inf_db, first[0]["id"], "A woody plant.")
    follow_up = _say(client, chat, "Name one.", first[0]["id"])
    edit = _say(client, chat, "Name two.", first[0]["id"])  # an edit: a sibling of the follow-up
    assert follow_up.status_code == edit.status_code == 201
    tree = client.get(f"/chats/{chat}", headers=ALICE).json()["messages"]
    siblings = [m["id"] for m in tree if m["parent_id"] == first[0]["id"]]
    assert siblings == [follow_up.json()["id"], edit.json()["id"]]
    assert {m["id"] for m in tree if m["parent_id"] == root["id"]} == {first[0]["id"], regenerated[0]["id"]}
    # the first message edited: another root, the chat keeps its title
    edited_root = _say(client, chat, "What is a forest?")
    assert edited_root.status_code == 201 and edited_root.json()["parent_id"] is None
    chat_now = client.get(f"/chats/{chat}", headers=ALICE).json()
    assert [m["id"] for m in chat_now["messages"] if m["parent_id"] is None] == [
        root["id"],
        edited_root.json()["id"],
    ]
    assert chat_now["title"] == "What is a tree?"

    r = _say(client, chat, "x" * 10, first[0]["id"])
    assert r.status_code == 201
    assert client.post(f"/chats/{chat}/messages", json={"content": ""}, headers=ALICE).status_code == 422
    nul = client.post(f"/chats/{chat}/messages", json={"content": "a\x00b"}, headers=ALICE)
    assert nul.status_code == 422 and "NUL" in nul.text  # PostgreSQL could not store it: refused up front
    assert client.patch(f"/chats/{chat}", json={"title": "t\x00"}, headers=ALICE).status_code == 422
    r = client.post(
        f"/chats/{chat}/assistant-messages", json={"parent_id": root["id"], "model": "nope"}, headers=ALICE
    )
    assert r.status_code == 404 and r.json()["error_code"] == ErrorCode.MODEL_UNKNOWN
    r = client.post(
        f"/chats/{chat}/assistant-messages", json={"parent_id": root["id"], "preset": "nope"}, headers=ALICE
    )
    assert r.json()["error_code"] == ErrorCode.PRESET_UNKNOWN
    r = client.post(
        f"/chats/{chat}/assistant-messages",
        json={"parent_id": root["id"], "preset": "greedy"},
        headers=ALICE,
    )
    assert r.json()["messages"][0]["sampling"]["do_sample"] is False


def test_message_limits(settings: Any, inf_db: Database) -> None:
    from oasst.inference.server.app import create_app

    limited = settings.model_copy(update={"max_chat_messages": 3, "max_message_length": 20})
    with TestClient(create_app(limited, database=inf_db, migrate=False)) as c:
        chat = _chat(c)["id"]
        r = _say(c, chat, "x" * 21)
        assert r.status_code == 413 and r.json()["error_code"] == ErrorCode.MESSAGE_TOO_LONG
        root = _say(c, chat, "short").json()
        r = c.post(
            f"/chats/{chat}/assistant-messages", json={"parent_id": root["id"], "drafts": 3}, headers=ALICE
        )
        assert r.status_code == 413 and r.json()["error_code"] == ErrorCode.CHAT_TOO_LONG


def test_replies_asked_for_are_limited_per_user(settings: Any, inf_db: Database) -> None:
    """As in the original (20 per 600 s), but every draft counts: 429, a stable code, Retry-After."""
    from oasst.inference.server.app import create_app

    limited = settings.model_copy(update={"reply_limit": 4, "reply_limit_interval_s": 600})
    with TestClient(create_app(limited, database=inf_db, migrate=False)) as c:
        chat = _chat(c)["id"]
        root = _say(c, chat, "Hello").json()
        assert len(_ask(c, chat, root["id"], drafts=3)) == 3
        assert len(_ask(c, chat, root["id"])) == 1  # the fourth reply
        r = c.post(f"/chats/{chat}/assistant-messages", json={"parent_id": root["id"]}, headers=ALICE)
        assert r.status_code == 429 and r.json()["error_code"] == ErrorCode.TOO_MANY_REPLIES
        assert 1 <= int(r.headers["Retry-After"]) <= 600
        messages = c.get(f"/chats/{chat}", headers=ALICE).json()["messages"]
        assert len(messages) == 5  # the refused request left nothing behind
        bob_chat = _chat(c, BOB)["id"]  # another person has a budget of their own
        bob_root = c.post(f"/chats/{bob_chat}/messages", json={"content": "Hi"}, headers=BOB).json()
        r = c.post(f"/chats/{bob_chat}/assistant-messages", json={"parent_id": bob_root["id"]}, headers=BOB)
        assert r.status_code == 202, r.text


def test_search_titles_and_contents(client: TestClient) -> None:
    a = _chat(client, title="Gardening")["id"]
    b = _chat(client, title="Cooking")["id"]
    _say(client, b, "How long do I boil an EGG_100%?")
    _chat(client, headers=BOB, title="gardening too")

    def search(q: str) -> list[str]:
        return [c["id"] for c in client.get("/chats", params={"q": q}, headers=ALICE).json()["items"]]

    assert search("garden") == [a]
    assert search("egg_100%") == [b]
    assert search("_") == [b]  # LIKE wildcards are literal
    assert search("nothing like it") == []


def test_votes_reports_draft_picks_and_export(client: TestClient, inf_db: Database) -> None:
    chat = _chat(client, title="Poems", system_prompt="You are a poet.")["id"]
    root = _say(client, chat, "Write a haiku.").json()
    drafts = _ask(client, chat, root["id"], drafts=3)
    assert len({d["draft_group"] for d in drafts}) == 1 and drafts[0]["draft_group"]
    for n, d in enumerate(drafts):
        _complete(inf_db, d["id"], f"haiku {n}")

    r = client.put(f"/chats/{chat}/messages/{drafts[1]['id']}/vote", json={"score": 1}, headers=ALICE)
    assert r.status_code == 200 and r.json()["score"] == 1
    r = client.put(f"/chats/{chat}/messages/{root['id']}/vote", json={"score": 1}, headers=ALICE)
    assert r.json()["error_code"] == ErrorCode.NOT_AN_ASSISTANT_MESSAGE
    assert (
        client.put(
            f"/chats/{chat}/messages/{drafts[1]['id']}/vote", json={"score": 2}, headers=ALICE
        ).status_code
        == 422
    )
    r = client.post(
        f"/chats/{chat}/messages/{drafts[2]['id']}/reports",
        json={"report_type": "offensive", "reason": "rude"},
        headers=ALICE,
    )
    assert r.status_code == 201

    r = client.post(f"/chats/{chat}/draft-picks", json={"selected_id": drafts[1]["id"]}, headers=ALICE)
    assert r.status_code == 200
    picked = {m["id"]: m["selected"] for m in r.json()}
    assert picked == {drafts[0]["id"]: False, drafts[1]["id"]: True, drafts[2]["id"]: False}

    md = client.get(f"/chats/{chat}/export", params={"format": "md"}, headers=ALICE)
    assert md.status_code == 200 and md.headers["content-type"].startswith("text/markdown")
    assert "# Poems" in md.text and "You are a poet." in md.text and "Write a haiku." in md.text
    assert "alternative 2 of 3" in md.text and "picked" in md.text and "vote +1" in md.text
    js = client.get(f"/chats/{chat}/export", params={"format": "json"}, headers=ALICE).json()
    assert js["title"] == "Poems" and len(js["messages"]) == 4
    assert client.get(f"/chats/{chat}/export", params={"format": "pdf"}, headers=ALICE).status_code == 422

    # the loop-closing export reads opted-in chats only, with votes, picks and reports
    opted_out = _chat(client, allow_data_use=False)["id"]
    out_root = _say(client, opted_out, "private").json()
    _complete(inf_db, _ask(client, opted_out, out_root["id"])[0]["id"], "private answer")
    found = inf_db.read(lambda s: list(iter_opted_in_chats(s)))
    assert [c.chat.id for c in found] == [chat]
    exported = {m.id: m for m in found[0].messages}
    assert exported[drafts[1]["id"]].selected is True and exported[drafts[1]["id"]].score == 1
    assert [(r.message_id, r.report_type) for r in found[0].reports] == [(drafts[2]["id"], "offensive")]

    client.patch(f"/chats/{chat}", json={"allow_data_use": False}, headers=ALICE)
    assert inf_db.read(lambda s: list(iter_opted_in_chats(s))) == []


def test_models_and_presets(client: TestClient) -> None:
    models = client.get("/models", headers=ALICE).json()
    assert [m["name"] for m in models] == ["test-model"]
    assert {p["name"] for p in models[0]["presets"]} == {"greedy", "balanced", "creative"}
    assert models[0]["workers"] == 0
