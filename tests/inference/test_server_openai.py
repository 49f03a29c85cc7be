"""The /v1 API driven by the official ``openai`` client against a live server and scripted workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy.orm import Session

from oasst.inference.server.db import Database
from oasst.inference.server.models import Message
from oasst.inference.server.services import work
from oasst.inference.server.settings import Settings
from tests.inference.conftest import MODEL, Keys, ScriptedWorker, bearer, wait_for, workers

ServerFactory = Callable[[Settings], AbstractContextManager[str]]


@pytest.fixture
def url(settings: Settings, server_factory: ServerFactory) -> Iterator[str]:
    with server_factory(settings) as base:
        yield base


_clients: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def _client(url: str, key: str) -> openai.OpenAI:
    _clients.append(openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30))
    return _clients[-1]


def test_completion_with_and_without_streaming(url: str, keys: Keys) -> None:
    client = _client(url, keys.api)
    with workers(ScriptedWorker(url, keys.worker, max_parallel=2)) as (worker,):
        assert [m.id for m in client.models.list()] == [MODEL]
        reply = client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Greet the world."},
            ],
            max_tokens=20,
            temperature=0.3,
            top_p=0.9,
            seed=7,
            extra_body={"top_k": 20, "repetition_penalty": 1.2, "typical_p": 0.8, "min_tokens": 3},  # as vLLM
        )
        assert reply.id.startswith("chatcmpl-") and reply.object == "chat.completion"
        assert reply.choices[0].message.content == "Hello, world!"
        assert reply.choices[0].finish_reason == "stop"
        assert reply.usage is not None
        assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (
            12,
            4,
            16,
        )
        request = worker.requests[0]
        assert [t.role for t in request.messages] == ["system", "user", "assistant", "user"]
        assert request.sampling.max_new_tokens == 20 and request.sampling.seed == 7
        assert request.sampling.temperature == 0.3 and request.sampling.top_p == 0.9
        assert (request.sampling.top_k, request.sampling.repetition_penalty) == (20, 1.2)
        assert request.sampling.typical_p == 0.8 and request.sampling.min_new_tokens == 3

        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Stream it."}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "Hello, world!"
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finishes == ["stop"]
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_n_choices_stop_sequences_and_greedy(url: str, keys: Keys) -> None:
    client = _client(url, keys.api)
    with workers(ScriptedWorker(url, keys.worker, max_parallel=2)) as (worker,):
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], n=2, stop=[" world"], temperature=0
        )
        assert [c.index for c in reply.choices] == [0, 1]
        # the stop string ends the text (the worker is told, and the server makes sure)
        assert [c.message.content for c in reply.choices] == ["Hello,", "Hello,"]
        assert all(r.sampling.stop == [" world"] and r.sampling.do_sample is False for r in worker.requests)
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], n=2, stream=True
        )
        texts = {0: "", 1: ""}
        for chunk in stream:
            for choice in chunk.choices:
                texts[choice.index] += choice.delta.content or ""
        assert texts == {0: "Hello, world!", 1: "Hello, world!"}


def test_errors_in_openai_shape(url: str, keys: Keys) -> None:
    with pytest.raises(openai.AuthenticationError) as bad_key:
        _client(url, "oia_not-a-key").models.list()
    assert bad_key.value.code == "key_invalid"
    with pytest.raises(openai.PermissionDeniedError):
        _client(url, keys.worker).models.list()
    client = _client(url, keys.api)
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "Hi"}])
    assert unknown.value.code == "model_unknown"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "assistant", "content": "Hi"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[])
    with pytest.raises(openai.BadRequestError):  # a penalty of 0 would divide by zero
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], extra_body={"repetition_penalty": 0}
        )
    with workers(ScriptedWorker(url, keys.worker, fail_with="engine exploded")):
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
        assert failed.value.status_code == 502
        with pytest.raises(openai.APIError, match="engine exploded"):
            list(
                client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True
                )
            )


def test_api_timeout_and_queue_full(settings: Settings, server_factory: ServerFactory, keys: Keys) -> None:
    limited = settings.model_copy(update={"queue_wait_timeout_s": 0.3, "queue_max_size": 1})
    with server_factory(limited) as url:
        client = _client(url, keys.api)
        with pytest.raises(openai.APIStatusError) as timed_out:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
        assert timed_out.value.status_code == 504
        with pytest.raises(openai.APIStatusError) as full:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], n=2)
        assert full.value.status_code == 503 and full.value.response.headers["Retry-After"]
        assert full.value.code == "queue_full"


def test_streaming_client_that_leaves_cancels_its_work(url: str, keys: Keys) -> None:
    with workers(ScriptedWorker(url, keys.worker, hold_after=1)) as (worker,):
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
        with (
            httpx.Client(base_url=url, headers=bearer(keys.api), timeout=30) as http,
            http.stream("POST", "/v1/chat/completions", json=body) as r,
        ):
            for line in r.iter_lines():
                if '"content":"Hello"' in line:
                    break
        # nobody can read the rest of a /v1 answer: the work is stopped and the slot freed
        wait_for(lambda: len(worker.cancels) == 1, what="CancelWork")
        worker.release()
        reply = _client(url, keys.api).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Again"}]
        )
        assert reply.choices[0].message.content == "Hello, world!"


def test_an_answer_does_not_wait_for_its_hidden_row_to_be_stored(
    url: str, keys: Keys, inf_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/v1 callers never read the stored row back, so their answer ends when the worker's does; the
    row is stored beside it (here held up on purpose) and ends complete."""
    release = threading.Event()
    store = work.complete_work

    def slow_store(session: Session, message_id: str, **kwargs: Any) -> Message | None:
        release.wait(20)
        return store(session, message_id, **kwargs)

    monkeypatch.setattr(work, "complete_work", slow_store)
    client = _client(url, keys.api)

    def state(message_id: str) -> str:
        return inf_db.read(lambda s: s.get(Message, message_id).state)  # type: ignore[union-attr]

    try:
        with workers(ScriptedWorker(url, keys.worker)):
            reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
            assert reply.choices[0].message.content == "Hello, world!"
            assert reply.usage is not None and reply.usage.completion_tokens == 4
            message_id = reply.id.removeprefix("chatcmpl-")
            assert state(message_id) == "in_progress"  # still being stored
            release.set()
            wait_for(lambda: state(message_id) == "complete", what="the reply to be stored")
            assert inf_db.read(lambda s: s.get(Message, message_id).content) == "Hello, world!"  # type: ignore[union-attr]
    finally:
        release.set()


@pytest.fixture
def slow_start(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Recording a start waits until the returned event is set (a slow database)."""
    gate = threading.Event()
    record = work.mark_started

    def held(session: Session, message_id: str, **kwargs: Any) -> bool:
        gate.wait(20)
        return record(session, message_id, **kwargs)

    monkeypatch.setattr(work, "mark_started", held)
    yield gate
    gate.set()


def _state(db: Database, message_id: str) -> str:
    return db.read(lambda s: s.get(Message, message_id).state)  # type: ignore[union-attr]


def test_the_worker_gets_a_request_while_its_start_is_recorded(
    url: str, keys: Keys, inf_db: Database, slow_start: threading.Event
) -> None:
    """A /v1 request goes to the worker straight from the queue (built when it was queued); its answer is
    stored, and answered, only once the start is recorded."""
    client = _client(url, keys.api)
    replies: list[Any] = []
    with workers(ScriptedWorker(url, keys.worker)) as (worker,):
        caller = threading.Thread(
            target=lambda: replies.append(
                client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
            )
        )
        caller.start()
        wait_for(lambda: worker.finished, what="the worker to answer")
        message_id = worker.requests[0].id
        assert [t.content for t in worker.requests[0].messages] == ["Hi"]
        assert _state(inf_db, message_id) == "pending" and caller.is_alive()  # start not recorded yet
        slow_start.set()
        caller.join(20)
        assert replies and replies[0].choices[0].message.content == "Hello, world!"
        wait_for(lambda: _state(inf_db, message_id) == "complete", what="the answer to be stored")
        assert worker.cancels == []


def test_a_request_that_ends_before_its_start_is_recorded_is_cancelled_on_the_worker(
    url: str, keys: Keys, inf_db: Database, slow_start: threading.Event
) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    with workers(ScriptedWorker(url, keys.worker, hold_after=1)) as (worker,):
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=bearer(keys.api)) as r:
            wait_for(lambda: worker.requests, what="the request to reach the worker")
        # the caller went away while the start was still being recorded: the message is stopped
        message_id = worker.requests[0].id
        wait_for(lambda: _state(inf_db, message_id) == "cancelled", what="the stop")
        wait_for(lambda: worker.cancels == [message_id], what="the worker to be told")
        slow_start.set()  # the late start finds the message ended: nothing more is sent or stored
        worker.release()
        time.sleep(0.3)
        assert worker.cancels == [message_id] and _state(inf_db, message_id) == "cancelled"
        assert r.status_code == 200


def test_a_start_that_cannot_be_recorded_ends_the_session_and_another_worker_answers(
    url: str, keys: Keys, inf_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = work.mark_started
    failures: list[str] = []

    def flaky(session: Session, message_id: str, **kwargs: Any) -> bool:
        if not failures:
            failures.append(message_id)
            raise RuntimeError("the database went away for a moment")
        return record(session, message_id, **kwargs)

    monkeypatch.setattr(work, "mark_started", flaky)
    client = _client(url, keys.api)
    with workers(ScriptedWorker(url, keys.worker), ScriptedWorker(url, keys.worker)) as pair:
        chunks = list(
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True
            )
        )
        # the abandoned attempt's tokens never reach the stream: the text is there once
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello, world!"
        message_id = chunks[0].id.removeprefix("chatcmpl-")
        assert failures == [message_id]
        # the first attempt's session was closed (as a failed start always did); the other worker answered
        first = next(w for w in pair if w.ended)
        second = next(w for w in pair if w is not first)
        assert first.close_code == 1011 and [r.id for r in first.requests] == [message_id]
        wait_for(lambda: second.finished == [message_id], what="the other worker's answer")
        wait_for(lambda: _state(inf_db, message_id) == "complete", what="the answer to be stored")
