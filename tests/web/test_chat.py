"""Chat in the website over the real inference server and a scripted worker: chats, streamed replies
through the website's SSE proxy, regenerate and edit branches with their ‹ i/n › navigator, drafts,
votes, reports, stop, chat actions, privacy between people, and chat switched off."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from oasst.client import StreamingASGITransport
from oasst.inference.server.app import create_app as create_inference_app
from oasst.inference.server.db import Database
from oasst.inference.server.models import Chat, Message, Report
from oasst.inference.server.services.keys import create_key
from oasst.web.app import create_app as create_web_app
from oasst.web.mailer import ConsoleMailer
from oasst.web.settings import WebSettings
from tests.backend.live_server import free_port
from tests.inference.conftest import SECRET, ScriptedWorker, inf_db, make_settings
from tests.web.conftest import Browser, csrf, dev_sign_in

__all__ = ["inf_db"]  # the inference tables, emptied around each test

HELLO = "Hello, world!"


@dataclass
class ChatSite:
    """One browser session on a website with chat, the inference server's database, and its worker."""

    client: TestClient
    db: Database
    url: str  # the inference server's own address (only the worker uses it)
    worker_key: str

    def worker(self, **options: Any) -> ScriptedWorker:
        return ScriptedWorker(self.url, self.worker_key, **options).start()

    def token(self, page: httpx.Response | None = None) -> str:
        return csrf(page if page is not None else self.client.get("/chat"))

    def post(self, path: str, **data: Any) -> httpx.Response:
        return self.client.post(path, data={"csrf_token": self.token(), **data})

    def events(self, chat_id: str, message_id: str) -> list[dict[str, Any]]:
        answer = self.client.get(f"/chat/{chat_id}/messages/{message_id}/events")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
        return [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: ")]

    def message(self, message_id: str) -> Message:
        row = self.db.read(lambda s: s.get(Message, message_id))
        assert row is not None
        return row


@pytest.fixture
def chat_site(
    web_settings: WebSettings, backend_app: Any, mailer: ConsoleMailer, inf_db: Database
) -> Iterator[ChatSite]:
    """The website with ``inference_url`` set, reaching the inference app in process; the inference app
    is also served by uvicorn on the same event loop so the scripted worker can connect to it."""
    inference_app = create_inference_app(
        make_settings(inf_db.engine.url.render_as_string(False)), database=inf_db, migrate=False
    )
    settings = web_settings.model_copy(
        update={"inference_url": "http://inference.test", "inference_user_token_secret": SecretStr(SECRET)}
    )
    web_app = create_web_app(
        settings,
        backend_transport=httpx.ASGITransport(app=backend_app),
        inference_transport=StreamingASGITransport(inference_app),
        mailer=mailer,
    )
    key = inf_db.write(lambda s: create_key(s, kind="worker", name="test worker")[1])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(inference_app, host="127.0.0.1", port=port, log_level="warning"))
    with TestClient(web_app, raise_server_exceptions=False, follow_redirects=True) as client:
        serving = client.portal.start_task_soon(server.serve)
        deadline = time.monotonic() + 20
        while not server.started:
            assert not serving.done() and time.monotonic() < deadline, "the inference server did not start"
            time.sleep(0.02)
        try:
            yield ChatSite(client, inf_db, f"http://127.0.0.1:{port}", key)
        finally:
            server.should_exit = True
            serving.result(timeout=20)


@pytest.fixture
def worker(chat_site: ChatSite) -> Iterator[Callable[..., ScriptedWorker]]:
    started: list[ScriptedWorker] = []

    def start(**options: Any) -> ScriptedWorker:
        started.append(chat_site.worker(**options))
        return started[-1]

    yield start
    for w in started:
        w.release()
        w.stop()


def _ids(page: httpx.Response, testid: str = "chat-message") -> list[str]:
    return re.findall(rf'data-testid="{testid}"\s+data-message-id="([^"]+)"', page.text)


def _at(page: httpx.Response) -> str:
    found = re.search(r"[?&]at=([^&]+)", str(page.url))
    assert found, page.url
    return found.group(1)


def _chat_id(page: httpx.Response) -> str:
    found = re.search(r"/chat/([^/?]+)", str(page.url))
    assert found, page.url
    return found.group(1)


def _start_chat(site: ChatSite, text: str = "What is a tree?", **fields: Any) -> tuple[str, str, str]:
    """A new chat with a first message; returns the chat, the message and the (streamed) reply ids."""
    page = site.post("/chat", content=text, allow_data_use="1", **fields)
    assert page.status_code == 200, page.text
    chat_id, question = _chat_id(page), _at(page)
    reply = _ids(page)[-1]
    assert reply != question
    events = site.events(chat_id, reply)
    assert events[-1]["event_type"] == "message", events
    return chat_id, question, reply


def test_chat_streams_replies_and_branches(
    chat_site: ChatSite, worker: Callable[..., ScriptedWorker]
) -> None:
    site = chat_site
    dev_sign_in(site.client, "alice")
    assert 'data-testid="nav-chat"' in site.client.get("/dashboard").text
    w = worker(hold_after=0)  # the reply waits before its first token, so the page shows it pending
    page = site.post("/chat", content="What is a tree?", system_prompt="Be brief.", allow_data_use="1")
    chat_id, question = _chat_id(page), _at(page)
    assert "What is a tree?" in page.text and 'data-testid="model-warning"' in page.text
    reply = _ids(page)[-1]
    assert f'data-stream-url="/chat/{chat_id}/messages/{reply}/events"' in page.text
    assert 'data-testid="stop"' in page.text and "data-wait-for-reply" in page.text
    w.release()

    events = site.events(chat_id, reply)  # the website's proxy of the inference server's stream
    assert [e["text"] for e in events if e["event_type"] == "token"] == ["Hello", ",", " world", "!"]
    assert events[-1]["event_type"] == "message" and events[-1]["message"]["content"] == HELLO
    assert [(t.role, t.content) for t in w.requests[0].messages] == [
        ("system", "Be brief."),
        ("user", "What is a tree?"),
    ]
    fragment = site.client.get(f"/chat/{chat_id}/messages/{reply}/fragment")
    assert "<p>Hello, world!</p>" in fragment.text and 'data-testid="vote-up"' in fragment.text

    page = site.client.get(f"/chat/{chat_id}")
    assert "<p>Hello, world!</p>" in page.text and 'data-testid="branch-nav"' not in page.text
    assert f'name="parent_id" value="{reply}"' in page.text and "data-wait-for-reply" not in page.text

    # regenerate: a second reply to the same question, shown as 2/2
    page = site.post(f"/chat/{chat_id}/messages/{question}/regenerate")
    second = _at(page)
    assert site.events(chat_id, second)[-1]["message"]["content"] == HELLO
    page = site.client.get(f"/chat/{chat_id}?at={second}")
    assert re.findall(r'data-testid="branch-pos">([^<]+)<', page.text) == ["2/2"]
    assert f'href="/chat/{chat_id}?at={reply}"' in page.text  # ‹ goes back to the first reply
    assert re.findall(
        r'data-testid="branch-pos">([^<]+)<', site.client.get(f"/chat/{chat_id}?at={reply}").text
    ) == ["1/2"]

    # the conversation goes on from the first reply; then an edit of that message is a sibling branch
    page = site.post(f"/chat/{chat_id}/messages", content="Name one.", parent_id=reply)
    follow_up = _at(page)
    site.events(chat_id, _ids(page)[-1])
    page = site.post(f"/chat/{chat_id}/messages/{follow_up}/edit", content="Name two.")
    edited = _at(page)
    site.events(chat_id, _ids(page)[-1])
    page = site.client.get(f"/chat/{chat_id}?at={edited}")
    assert re.findall(r'data-testid="branch-pos">([^<]+)<', page.text) == ["1/2", "2/2"]
    assert "Name two." in page.text and "Name one." not in page.text
    assert [t.content for t in w.requests[-1].messages] == [
        "Be brief.",
        "What is a tree?",
        HELLO,
        "Name two.",
    ]
    rows = site.db.read(lambda s: s.scalars(select(Message).where(Message.chat_id == chat_id)).all())
    assert len(rows) == 7

    # the first message too: its edit is a new first message, answered afresh, with ‹ 2/2 › on top
    assert 'data-testid="edit-panel"' in site.client.get(f"/chat/{chat_id}?at={question}").text
    page = site.post(f"/chat/{chat_id}/messages/{question}/edit", content="What is a bush?")
    new_first = _at(page)
    site.events(chat_id, _ids(page)[-1])
    page = site.client.get(f"/chat/{chat_id}?at={new_first}")
    assert re.findall(r'data-testid="branch-pos">([^<]+)<', page.text)[0] == "2/2"
    assert (
        "What is a bush?" in page.text and f'id="edit-{question}"' not in page.text
    )  # the old one is off path
    assert [(t.role, t.content) for t in w.requests[-1].messages] == [
        ("system", "Be brief."),
        ("user", "What is a bush?"),
    ]
    old_branch = site.client.get(f"/chat/{chat_id}?at={question}").text
    assert re.findall(r'data-testid="branch-pos">([^<]+)<', old_branch)[0] == "1/2"


def test_drafts_votes_reports_and_stop(chat_site: ChatSite, worker: Callable[..., ScriptedWorker]) -> None:
    site = chat_site
    dev_sign_in(site.client, "alice")
    worker(max_parallel=2)
    chat_id, _, _ = _start_chat(site, drafts="2")
    page = site.client.get(f"/chat/{chat_id}")
    drafts = _ids(page)[1:]
    assert (
        'data-testid="drafts"' in page.text and len(drafts) == 2 and 'data-testid="pick-first"' in page.text
    )
    for draft in drafts:
        site.events(chat_id, draft)
    assert site.client.get(f"/chat/{chat_id}").text.count('data-testid="pick-draft"') == 2
    page = site.post(f"/chat/{chat_id}/draft-picks", selected_id=drafts[1])
    assert 'data-testid="drafts"' not in page.text and 'data-testid="composer"' in page.text
    assert [site.message(d).selected for d in drafts] == [False, True]

    # a vote as chat.js sends it (fetch with the CSRF header), then a report by form
    answer = site.client.post(
        f"/chat/{chat_id}/messages/{drafts[1]}/vote",
        data={"score": "1"},
        headers={"X-CSRF-Token": site.token(), "Accept": "application/json"},
    )
    assert answer.status_code == 200 and answer.json()["score"] == 1
    assert site.message(drafts[1]).score == 1
    fragment = site.client.get(f"/chat/{chat_id}/messages/{drafts[1]}/fragment").text
    assert re.search(r'aria-pressed="true"\s+data-testid="vote-up"', fragment)
    page = site.post(f"/chat/{chat_id}/messages/{drafts[1]}/report", report_type="offensive", reason="rude")
    assert 'data-testid="report-sent"' in page.text
    [report] = site.db.read(lambda s: s.scalars(select(Report)).all())
    assert (report.message_id, report.report_type, report.reason) == (drafts[1], "offensive", "rude")


def test_stop_keeps_the_text_so_far(chat_site: ChatSite, worker: Callable[..., ScriptedWorker]) -> None:
    site = chat_site
    dev_sign_in(site.client, "alice")
    w = worker(hold_after=1)
    page = site.post("/chat", content="Talk to me.", allow_data_use="1")
    chat_id, reply = _chat_id(page), _ids(page)[-1]
    deadline = time.monotonic() + 20
    while w.tokens_sent(reply) < 1:
        assert time.monotonic() < deadline, "the worker never started"
        time.sleep(0.02)
    answer = site.client.post(
        f"/chat/{chat_id}/messages/{reply}/stop",
        headers={"X-CSRF-Token": site.token(), "Accept": "application/json"},
    )
    assert answer.status_code == 200 and answer.json()["state"] == "cancelled"
    assert site.events(chat_id, reply)[-1]["message"]["content"] == "Hello"
    page = site.client.get(f"/chat/{chat_id}")
    assert 'data-testid="message-stopped"' in page.text and 'data-testid="composer"' in page.text


def test_an_empty_reply_says_so(chat_site: ChatSite, worker: Callable[..., ScriptedWorker]) -> None:
    """A model that ends at once leaves no blank bubble: the page says what happened and what to do."""
    site = chat_site
    dev_sign_in(site.client, "alice")
    worker(tokens=())
    chat_id, _question, reply = _start_chat(site)
    page = site.client.get(f"/chat/{chat_id}")
    assert page.status_code == 200
    assert page.text.count('data-testid="message-empty"') == 1
    assert "without writing anything" in page.text
    assert 'data-testid="regenerate"' in page.text
    fragment = site.client.get(f"/chat/{chat_id}/messages/{reply}/fragment")
    assert 'data-testid="message-empty"' in fragment.text


def test_chat_actions(chat_site: ChatSite, worker: Callable[..., ScriptedWorker]) -> None:
    site = chat_site
    dev_sign_in(site.client, "alice")
    worker()
    chat_id, _, _ = _start_chat(site, "Tell me about oak trees.")
    other = _chat_id(site.post("/chat", allow_data_use="1"))  # an empty chat, no first message
    assert 'data-testid="composer"' in site.client.get(f"/chat/{other}").text

    page = site.post(f"/chat/{chat_id}/rename", title="Oaks")
    assert 'data-testid="chat-title">Oaks<' in page.text
    found = site.client.get("/chat", params={"q": "OAK TREES"})
    assert re.findall(r'data-chat-id="([^"]+)"', found.text) == [chat_id]
    assert 'data-testid="no-chats"' in site.client.get("/chat", params={"q": "pines"}).text

    page = site.post(f"/chat/{chat_id}/data-use", allow="0")
    assert "never used for training" in page.text
    assert site.db.read(lambda s: s.get(Chat, chat_id)).allow_data_use is False  # type: ignore[union-attr]

    markdown = site.client.get(f"/chat/{chat_id}/export", params={"format": "md"})
    assert markdown.headers["content-disposition"] == f'attachment; filename="chat-{chat_id}.md"'
    assert (
        "# Oaks" in markdown.text and "Tell me about oak trees." in markdown.text and HELLO in markdown.text
    )
    exported = site.client.get(f"/chat/{chat_id}/export", params={"format": "json"}).json()
    assert [m["content"] for m in exported["messages"]] == ["Tell me about oak trees.", HELLO]

    site.post(f"/chat/{chat_id}/hide", hidden="1")
    assert re.findall(r'data-chat-id="([^"]+)"', site.client.get("/chat").text) == [other]
    hidden_list = site.client.get("/chat", params={"hidden": "true"}).text
    assert chat_id in hidden_list and 'data-testid="badge-hidden"' in hidden_list

    page = site.post(f"/chat/{chat_id}/delete")
    assert str(page.url).endswith("/chat")
    assert site.client.get(f"/chat/{chat_id}").status_code == 404
    assert site.db.read(lambda s: s.get(Chat, chat_id)).deleted  # type: ignore[union-attr]


def test_another_person_cannot_see_my_chat(
    chat_site: ChatSite, worker: Callable[..., ScriptedWorker]
) -> None:
    site = chat_site
    dev_sign_in(site.client, "alice")
    worker()
    chat_id, _, reply = _start_chat(site, "my secret")
    site.post("/signout")
    dev_sign_in(site.client, "bob")
    for path in (
        f"/chat/{chat_id}",
        f"/chat/{chat_id}/export?format=md",
        f"/chat/{chat_id}/messages/{reply}/events",
        f"/chat/{chat_id}/messages/{reply}/fragment",
    ):
        answer = site.client.get(path)
        assert answer.status_code == 404 and "my secret" not in answer.text, path
    answer = site.post(f"/chat/{chat_id}/messages", content="hi", parent_id=reply)
    assert answer.status_code == 404
    assert site.post(f"/chat/{chat_id}/delete").status_code == 404
    assert 'data-testid="no-chats"' in site.client.get("/chat").text
    assert site.db.read(lambda s: s.get(Chat, chat_id)).deleted is False  # type: ignore[union-attr]


def test_forms_need_the_csrf_token(chat_site: ChatSite) -> None:
    dev_sign_in(chat_site.client, "alice")
    answer = chat_site.client.post("/chat", data={"content": "hi"})
    assert answer.status_code == 403 and 'data-error-code="csrf_failed"' in answer.text
    assert chat_site.db.read(lambda s: s.scalars(select(Chat)).all()) == []


def test_chat_is_off_without_an_inference_server(browser: Browser) -> None:
    client = browser()
    assert client.get("/chat", follow_redirects=False).status_code == 404  # not even a sign-in redirect
    dev_sign_in(client, "alice")
    assert 'data-testid="nav-chat"' not in client.get("/dashboard").text
    assert client.get("/chat").status_code == 404
    assert client.get("/chat/abc").status_code == 404
