"""Dispatch end to end on a live server with scripted workers (in-process queue, SQLite and PostgreSQL):
the SSE sequence, two workers at once, drafts, stop, time limits, dead workers, full queues, and SSE
clients that go away."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest

from oasst.inference.server.errors import ErrorCode
from oasst.inference.server.settings import Settings
from tests.inference.conftest import ChatSession, Keys, ScriptedWorker, sse_events, wait_for, workers

ServerFactory = Callable[[Settings], AbstractContextManager[str]]
ChatFactory = Callable[..., ChatSession]


def _start(chat: ChatSession, text: str = "Hi there", **ask: Any) -> tuple[str, str, list[dict[str, Any]]]:
    chat_id = chat.new_chat(system_prompt="Be kind.")
    root = chat.say(chat_id, text)
    return chat_id, root, chat.ask(chat_id, root, **ask)


def test_sse_pending_tokens_message(
    settings: Settings, server_factory: ServerFactory, chat_factory: ChatFactory, keys: Keys
) -> None:
    with server_factory(settings) as url:
        chat = chat_factory(url)
        chat_id, _, [reply] = _start(chat)
        with chat.http.stream("GET", f"/chats/{chat_id}/messages/{reply['id']}/events") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            events = sse_events(r)
            first = next(events)
            assert first == {"event_type": "pending", "queue_position": 1, "queue_size": 1}
            with workers(ScriptedWorker(url, keys.worker)) as (worker,):
                rest = list(events)
        kinds = [e["event_type"] for e in rest]
        tokens = [e["text"] for e in rest if e["event_type"] == "token"]
        assert tokens == ["Hello", ",", " world", "!"]
        assert kinds[-1] == "message" and set(kinds[:-1]) <= {"pending", "token"}
        assert kinds.index("token") > max((i for i, k in enumerate(kinds) if k == "pending"), default=-1)
        final = rest[-1]["message"]
        assert final["state"] == "complete" and final["content"] == "Hello, world!"
        assert final["finish_reason"] == "stop"
        # the worker saw the system prompt and the path, ending with the user turn
        request = worker.requests[0]
        assert [(t.role, t.content) for t in request.messages] == [
            ("system", "Be kind."),
            ("user", "Hi there"),
        ]
        assert request.deadline_s == settings.generation_timeout_s
        # replay: a stream opened after the end replays everything
        again = chat.events(chat_id, reply["id"])
        assert [e["event_type"] for e in again] == ["token"] * 4 + ["message"]
        # the conversation goes on: the next turn carries the whole path
        follow = chat.say(chat_id, "And again?", reply["id"])
        with workers(ScriptedWorker(url, keys.worker, tokens=("Sure",))) as (w2,):
            [second] = chat.ask(chat_id, follow)
            chat.wait_state(chat_id, second["id"], "complete")
        assert [t.content for t in w2.requests[0].messages] == [
            "Be kind.",
            "Hi there",
            "Hello, world!",
            "And again?",
        ]


def test_a_nul_character_from_the_model_does_not_stop_the_reply_being_saved(
    settings: Settings, server_factory: ServerFactory, chat_factory: ChatFactory, keys: Keys
) -> None:
    """Random models emit anything, NUL included, which PostgreSQL cannot store: the reply must still
    complete (and stream) instead of hanging in_progress."""
    with server_factory(settings) as url:
        chat = chat_factory(url)
        chat_id, _, [reply] = _start(chat)
        with workers(ScriptedWorker(url, keys.worker, tokens=["a\x00b", " c"])):
            events = chat.events(chat_id, reply["id"])
        final = events[-1]["message"]
        assert final["state"] == "complete" and final["content"] == "a\ufffdb c"
        assert [e["text"] for e in events if e["event_type"] == "token"] == ["a\ufffdb", " c"]


def test_a_reply_that_cannot_be_stored_ends_failed_not_waiting(
    settings: Settings,
    server_factory: ServerFactory,
    chat_factory: ChatFactory,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from oasst.inference.server.services import work

    def broken_store(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk full")

    monkeypatch.setattr(work, "complete_work", broken_store)
    with server_factory(settings) as url:
        chat = chat_factory(url)
        chat_id, _, [reply] = _start(chat)
        with workers(ScriptedWorker(url, keys.worker)):
            events = chat.events(chat_id, reply["id"])
        assert events[-1] == {
            "event_type": "error",
            "error": "store_failed",
            "message": "the reply could not be saved",
        }
        stored = chat.http.get(f"/chats/{chat_id}/messages/{reply['id']}").json()
        assert stored["state"] == "failed"


def test_two_workers_serve_at_once_and_drafts(
    settings: Settings, server_factory: ServerFactory, chat_factory: ChatFactory, keys: Keys
) -> None:
    with server_factory(settings) as url:
        chat = chat_factory(url)
        one = ScriptedWorker(url, keys.worker, hold_after=1)
        two = ScriptedWorker(url, keys.worker, hold_after=1)
        with workers(one, two):
            chat_id, _, drafts = _start(chat, drafts=2)
            # each worker has one free slot: both drafts run at the same time, one per worker
            wait_for(lambda: len(one.requests) == 1 and len(two.requests) == 1, what="both workers busy")
            assert {one.requests[0].id, two.requests[0].id} == {d["id"] for d in drafts}
            one.release()
            two.release()
            for d in drafts:
                assert chat.wait_state(chat_id, d["id"], "complete")["content"] == "Hello, world!"
        models = chat.http.get("/models").json()
        assert models[0]["name"] == "test-model"


def test_stop_keeps_partial_text_and_frees_the_slot(
    settings: Settings, server_factory: ServerFactory, chat_factory: ChatFactory, keys: Keys
) -> None:
    with server_factory(settings) as url:
        chat = chat_factory(url)
        with workers(ScriptedWorker(url, keys.worker, hold_after=2)) as (worker,):
            chat_id, root, [reply] = _start(chat)
            wait_for(lambda: worker.tokens_sent(reply["id"]) == 2, what="two tokens")
            _tokens_seen(chat, chat_id, reply["id"], 2)
            r = chat.http.post(f"/chats/{chat_id}/messages/{reply['id']}/stop")
            assert r.status_code == 200, r.text
            stopped = r.json()
            assert stopped["state"] == "cancelled" and stopped["content"] == "Hello,"
            assert stopped["finish_reason"] == "cancelled"
            wait_for(lambda: worker.cancels == [reply["id"]], what="CancelWork")
            assert chat.events(chat_id, reply["id"])[-1]["message"]["state"] == "cancelled"
            # stopping again is harmless; the slot is free for the next request (max_parallel 1)
            assert (
                chat.http.post(f"/chats/{chat_id}/messages/{reply['id']}/stop").json()["state"] == "cancelled"
            )
            worker.release()
            [next_reply] = chat.ask(chat_id, root)
            assert chat.wait_state(chat_id, next_reply["id"], "complete")["content"] == "Hello, world!"
        # stopping a pending message (no worker) cancels it and takes it out of the queue
        [pending] = chat.ask(chat_id, root)
        assert (
            chat.http.post(f"/chats/{chat_id}/messages/{pending['id']}/stop").json()["state"] == "cancelled"
        )
        assert chat.events(chat_id, pending["id"])[-1]["event_type"] == "message"


def _tokens_seen(chat: ChatSession, chat_id: str, message_id: str, n: int) -> None:
    """Follow the message's stream until it has carried ``n`` tokens (they are in its log by then)."""
    seen = 0
    with chat.http.stream("GET", f"/chats/{chat_id}/messages/{message_id}/events") as r:
        for e in sse_events(r):
            seen += e["event_type"] == "token"
            if seen >= n:
                return
    raise AssertionError(f"the stream ended after {seen} tokens")


def test_worker_killed_mid_stream_fails_the_message(
    settings: Settings, server_factory: ServerFactory, chat_factory: ChatFactory, keys: Keys
) -> None:
    with server_factory(settings) as url:
        chat = chat_factory(url)
        worker = ScriptedWorker(url, keys.worker, hold_after=2).start()
        chat_id, _, [reply] = _start(chat)
        wait_for(lambda: worker.tokens_sent(reply["id"]) == 2, what="two tokens")
        _tokens_seen(chat, chat_id, reply["id"], 2)
        worker.kill()
        failed = chat.wait_state(chat_id, reply["id"], "failed")
        assert failed["content"] == "Hello," and failed["error"].startswith("worker_failed")
        last = chat.events(chat_id, reply["id"])[-1]
        assert last["event_type"] == "error" and last["error"] == "worker_failed"


def test_worker_killed_before_streaming_requeues_to_another(
    settings: Settings, server_factory: ServerFactory, chat_factory: ChatFactory, keys: Keys
) -> None:
    with server_factory(settings) as url:
        chat = chat_factory(url)
        first = ScriptedWorker(url, keys.worker, hold_after=0).start()
        chat_id, _, [reply] = _start(chat)
        wait_for(lambda: first.requests, what="the first worker to get the work")
        first.kill()
        chat.wait_state(chat_id, reply["id"], "pending")
        with workers(ScriptedWorker(url, keys.worker)) as (second,):
            done = chat.wait_state(chat_id, reply["id"], "complete")
        assert done["content"] == "Hello, world!" and second.requests[0].id == reply["id"]
        events = chat.events(chat_id, reply["id"])
        assert [e["event_type"] for e in events] == ["token"] * 4 + ["message"]


def test_silent_worker_is_dead_after_the_heartbeat_timeout(
    settings: Settings, server_factory: ServerFactory, chat_factory: ChatFactory, keys: Keys
) -> None:
    with server_factory(settings) as url:
        chat = chat_factory(url)
        frozen = ScriptedWorker(url, keys.worker, hold_after=0).start()
        chat_id, _, [reply] = _start(chat)
        wait_for(lambda: frozen.requests, what="the worker to get the work")
        frozen.freeze()  # socket open, nothing sent: only the heartbeat can tell
        wait_for(lambda: frozen.ended, what="the server to close the silent worker")
        assert frozen.close_code == 4408
        with workers(ScriptedWorker(url, keys.worker)):
            assert chat.wait_state(chat_id, reply["id"], "complete")["content"] == "Hello, world!"


def test_engine_error_fails_with_its_code(
    settings: Settings, server_factory: ServerFactory, chat_factory: ChatFactory, keys: Keys
) -> None:
    with server_factory(settings) as url:
        chat = chat_factory(url)
        with workers(ScriptedWorker(url, keys.worker, fail_with="CUDA out of memory")):
            chat_id, _, [reply] = _start(chat)
            failed = chat.wait_state(chat_id, reply["id"], "failed")
        assert failed["error"] == "engine_error: CUDA out of memory"
        assert chat.events(chat_id, reply["id"])[-1] == {
            "event_type": "error",
            "error": "engine_error",
            "message": "CUDA out of memory",
        }


def test_time_limits(
    settings: Settings, server_factory: ServerFactory, chat_factory: ChatFactory, keys: Keys
) -> None:
    limited = settings.model_copy(update={"queue_wait_timeout_s": 0.3, "generation_timeout_s": 0.6})
    with server_factory(limited) as url:
        chat = chat_factory(url)
        # nobody serves the model: the wait limit ends it
        chat_id, root, [waiting] = _start(chat)
        events = chat.events(chat_id, waiting["id"])
        assert events[0]["event_type"] == "pending"
        assert events[-1] == {
            "event_type": "error",
            "error": "timeout",
            "message": "No worker was free in time.",
        }
        assert chat.message(chat_id, waiting["id"])["state"] == "timeout"
        # a generation that runs too long is cut off, keeps its text, and the worker is told to cancel
        with workers(ScriptedWorker(url, keys.worker, hold_after=1)) as (worker,):
            [slow] = chat.ask(chat_id, root)
            timed_out = chat.wait_state(chat_id, slow["id"], "timeout")
            wait_for(lambda: worker.cancels == [slow["id"]], what="CancelWork")
        assert timed_out["content"] == "Hello" and timed_out["error"].startswith("timeout")


def test_queue_full_answers_503_with_retry_after(
    settings: Settings, server_factory: ServerFactory, chat_factory: ChatFactory, keys: Keys
) -> None:
    small = settings.model_copy(update={"queue_max_size": 2, "queue_retry_after_s": 7})
    with server_factory(small) as url:
        chat = chat_factory(url)
        chat_id, root, [a] = _start(chat)
        r = chat.http.post(f"/chats/{chat_id}/assistant-messages", json={"parent_id": root, "drafts": 2})
        assert r.status_code == 503 and r.headers["Retry-After"] == "7"
        assert r.json()["error_code"] == ErrorCode.QUEUE_FULL
        # nothing half-written: the refused drafts do not exist
        assert [
            m["id"] for m in chat.http.get(f"/chats/{chat_id}").json()["messages"] if m["role"] == "assistant"
        ] == [a["id"]]
        [b] = chat.ask(chat_id, root)
        assert (
            chat.http.post(f"/chats/{chat_id}/assistant-messages", json={"parent_id": root}).status_code
            == 503
        )
        with workers(ScriptedWorker(url, keys.worker, max_parallel=2)):
            for m in (a, b):
                chat.wait_state(chat_id, m["id"], "complete")
            assert chat.ask(chat_id, root)


def test_disconnected_sse_client_does_not_leak_work(
    settings: Settings, server_factory: ServerFactory, chat_factory: ChatFactory, keys: Keys
) -> None:
    with server_factory(settings) as url:
        chat = chat_factory(url)
        with workers(ScriptedWorker(url, keys.worker, hold_after=1)) as (worker,):
            chat_id, root, [reply] = _start(chat)
            with chat.http.stream("GET", f"/chats/{chat_id}/messages/{reply['id']}/events") as r:
                for e in sse_events(r):
                    if e["event_type"] == "token":
                        break  # the client goes away mid-stream
            worker.release()
            # generation went on and was saved; the slot is free again
            assert chat.wait_state(chat_id, reply["id"], "complete")["content"] == "Hello, world!"
            [again] = chat.ask(chat_id, root)
            chat.wait_state(chat_id, again["id"], "complete")
            assert worker.cancels == []


def test_disconnect_cancels_when_configured(
    settings: Settings, server_factory: ServerFactory, chat_factory: ChatFactory, keys: Keys
) -> None:
    with server_factory(settings.model_copy(update={"cancel_on_disconnect": True})) as url:
        chat = chat_factory(url)
        with workers(ScriptedWorker(url, keys.worker, hold_after=1)) as (worker,):
            chat_id, root, [reply] = _start(chat)
            with chat.http.stream("GET", f"/chats/{chat_id}/messages/{reply['id']}/events") as r:
                for e in sse_events(r):
                    if e["event_type"] == "token":
                        break
            cancelled = chat.wait_state(chat_id, reply["id"], "cancelled")
            assert cancelled["content"] == "Hello"
            wait_for(lambda: worker.cancels == [reply["id"]], what="CancelWork")
            worker.release()
            [again] = chat.ask(chat_id, root)
            assert chat.wait_state(chat_id, again["id"], "complete")["content"] == "Hello, world!"
