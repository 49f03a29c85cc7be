"""Fixtures of the inference server tests: settings with tiny limits, a migrated database, user tokens,
keys, a live uvicorn server, and ``ScriptedWorker`` — a real worker-protocol client on its own thread
that emits the tokens a test chooses, pausing where the test says."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import TypeAdapter
from sqlalchemy import text

from oasst.inference.protocol import (
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    CancelWork,
    DoneEvent,
    ErrorEvent,
    FinishReason,
    Ping,
    Pong,
    ServerToWorker,
    TokenEvent,
    Usage,
    WorkerHello,
    WorkRequest,
)
from oasst.inference.server.app import create_app
from oasst.inference.server.db import Database, make_engine
from oasst.inference.server.migrate import upgrade
from oasst.inference.server.models import InfBase
from oasst.inference.server.services.keys import create_key
from oasst.inference.server.settings import Settings
from oasst.inference.tokens import mint_user_token
from tests.backend.live_server import serve

SECRET = "test-user-token-secret-0123456789abcdef"
ROOT = "test-inference-root-token-0123456789"
MODEL = "test-model"
_migrated: set[str] = set()


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "user_token_secret": SECRET,
        "root_tokens": [ROOT],
        "default_model": MODEL,
        "heartbeat_interval_s": 0.1,
        "heartbeat_timeout_s": 1.5,
        "sweep_interval_s": 0.1,
        "pending_event_interval_s": 0.05,
        "db_pool_size": 5,
    }
    values.update(overrides)
    return Settings(**values)


def _truncate(db: Database) -> None:
    tables = list(reversed(InfBase.metadata.sorted_tables))
    with db.engine.begin() as conn:
        if db.engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(t.name for t in tables)} CASCADE"))
        else:
            for table in tables:
                conn.execute(table.delete())


@pytest.fixture
def inf_db(database_url: str) -> Iterator[Database]:
    """The test run's database with the inference tables, emptied around each test."""
    db = Database(make_engine(make_settings(database_url)))
    if database_url not in _migrated:
        upgrade(db.engine)
        _migrated.add(database_url)
    _truncate(db)
    yield db
    _truncate(db)
    db.dispose()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
def client(settings: Settings, inf_db: Database) -> Iterator[TestClient]:
    app = create_app(settings, database=inf_db, migrate=False)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def user_headers(user_id: str = "alice", name: str | None = None, ttl: float = 600) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_user_token(SECRET, user_id, name or user_id.title(), ttl)}"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Keys:
    worker: str
    api: str


@pytest.fixture
def keys(inf_db: Database) -> Keys:
    worker = inf_db.write(lambda s: create_key(s, kind="worker", name="test worker")[1])
    api = inf_db.write(lambda s: create_key(s, kind="api", name="test api")[1])
    return Keys(worker=worker, api=api)


@contextlib.contextmanager
def live(settings: Settings, db: Database) -> Iterator[str]:
    """A real uvicorn server for the app (real websockets and concurrency)."""
    app: FastAPI = create_app(settings, database=db, migrate=False)
    with serve(app) as url:
        yield url


@pytest.fixture
def server_factory(inf_db: Database) -> Callable[..., contextlib.AbstractContextManager[str]]:
    def factory(settings: Settings) -> contextlib.AbstractContextManager[str]:
        return live(settings, inf_db)

    return factory


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class ScriptedWorker:
    """A worker that speaks the real websocket protocol and emits ``tokens`` for every request.

    ``hold_after``: after that many tokens of a request it waits until ``release()``. ``fail_with``:
    answer every request with an ``error`` frame instead. ``kill()`` drops the TCP connection without
    a close frame; ``freeze()`` keeps it open but stops sending anything (no pings).
    """

    _frames: TypeAdapter[Any] = TypeAdapter(ServerToWorker)

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        model: str = MODEL,
        max_parallel: int = 1,
        tokens: tuple[str, ...] = ("Hello", ",", " world", "!"),
        hold_after: int | None = None,
        fail_with: str | None = None,
        protocol_version: int = PROTOCOL_VERSION,
        ping_interval: float = 0.1,
    ) -> None:
        self.url = base_url.replace("http://", "ws://") + "/workers/ws"
        self.key = key
        self.model = model
        self.max_parallel = max_parallel
        self.tokens = tokens
        self.hold_after = hold_after
        self.fail_with = fail_with
        self.protocol_version = protocol_version
        self.ping_interval = ping_interval
        self.requests: list[WorkRequest] = []
        self.cancels: list[str] = []
        self.finished: list[str] = []
        self.active: set[str] = set()
        self.first_frame: dict[str, Any] | None = None
        self.close_code: int | None = None
        self._gate = threading.Event()
        self._tokens_sent: dict[str, int] = {}
        self._frozen = False
        self._connected = threading.Event()
        self._ended = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ws: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    # -- control from the test thread ---------------------------------------------------------------

    def start(self, *, expect_refusal: bool = False) -> ScriptedWorker:
        self._thread.start()
        wait_for(lambda: self._connected.is_set() or self._ended.is_set(), what="worker connection")
        if not expect_refusal:
            assert self._connected.is_set(), "the worker could not connect"
        return self

    def release(self) -> None:
        self._gate.set()

    def tokens_sent(self, message_id: str) -> int:
        return self._tokens_sent.get(message_id, 0)

    def kill(self) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(lambda: self._ws.transport.abort())
        self._ended.wait(10)

    def freeze(self) -> None:
        self._frozen = True

    def stop(self) -> None:
        if self._loop is not None and not self._ended.is_set():
            fut = asyncio.run_coroutine_threadsafe(self._ws.close(), self._loop)
            with contextlib.suppress(Exception):
                fut.result(10)
        self._ended.wait(10)
        self._thread.join(10)

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    # -- the worker, on its own event loop --------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        finally:
            self._ended.set()

    async def _main(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        self._loop = asyncio.get_running_loop()
        headers = {"Authorization": f"Bearer {self.key}", PROTOCOL_HEADER: str(self.protocol_version)}
        async with connect(self.url, additional_headers=headers, ping_interval=None, proxy=None) as ws:
            self._ws = ws
            hello = WorkerHello(model=self.model, max_parallel=self.max_parallel, engine="scripted")
            # refused before the hello went out: the refusal frame is still there to read
            with contextlib.suppress(ConnectionClosed):
                await ws.send(hello.model_dump_json())
            pinger = asyncio.create_task(self._ping(ws))
            tasks: set[asyncio.Task[None]] = set()
            try:
                async for raw in ws:
                    data = json.loads(raw)
                    if self.first_frame is None:
                        self.first_frame = data
                    frame = self._frames.validate_python(data)
                    if isinstance(frame, Pong):
                        self._connected.set()  # the server has registered this worker
                    if isinstance(frame, WorkRequest):
                        self.requests.append(frame)
                        task = asyncio.create_task(self._generate(ws, frame))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    elif isinstance(frame, CancelWork):
                        self.cancels.append(frame.id)
                        self.active.discard(frame.id)
            except ConnectionClosed:
                pass
            finally:
                self.close_code = ws.close_code
                pinger.cancel()
                for task in list(tasks):
                    task.cancel()

    async def _ping(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed):
            while True:  # the first ping goes out at once: its pong says the server took the hello
                if not self._frozen:
                    await ws.send(Ping().model_dump_json())
                await asyncio.sleep(self.ping_interval)

    async def _generate(self, ws: Any, request: WorkRequest) -> None:
        self.active.add(request.id)
        if self.fail_with is not None:
            await ws.send(ErrorEvent(id=request.id, message=self.fail_with).model_dump_json())
            return
        text = ""
        for n, token in enumerate(self.tokens):
            if self.hold_after is not None and n >= self.hold_after:
                while not self._gate.is_set():
                    await asyncio.sleep(0.01)
            if request.id not in self.active or self._frozen:
                return
            await ws.send(TokenEvent(id=request.id, text=token).model_dump_json())
            self._tokens_sent[request.id] = n + 1
            text += token
            await asyncio.sleep(0.005)
        if request.id in self.active and not self._frozen:
            usage = Usage(prompt_tokens=len(request.messages) * 3, completion_tokens=len(self.tokens))
            done = DoneEvent(id=request.id, text=text, finish_reason=FinishReason.stop, usage=usage)
            await ws.send(done.model_dump_json())
            self.finished.append(request.id)
            self.active.discard(request.id)


@contextlib.contextmanager
def workers(*items: ScriptedWorker) -> Iterator[tuple[ScriptedWorker, ...]]:
    started = [w.start() for w in items]
    try:
        yield tuple(started)
    finally:
        for w in started:
            w.release()
            w.stop()


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line[6:])


class ChatSession:
    """A user's view of the chat API on a live server."""

    def __init__(self, base_url: str, user_id: str = "alice") -> None:
        self.http = httpx.Client(base_url=base_url, headers=user_headers(user_id), timeout=30)

    def close(self) -> None:
        self.http.close()

    def new_chat(self, **body: Any) -> str:
        r = self.http.post("/chats", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def say(self, chat_id: str, content: str, parent_id: str | None = None) -> str:
        r = self.http.post(f"/chats/{chat_id}/messages", json={"content": content, "parent_id": parent_id})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def ask(self, chat_id: str, parent_id: str, **body: Any) -> list[dict[str, Any]]:
        r = self.http.post(f"/chats/{chat_id}/assistant-messages", json={"parent_id": parent_id, **body})
        assert r.status_code == 202, r.text
        return list(r.json()["messages"])

    def message(self, chat_id: str, message_id: str) -> dict[str, Any]:
        r = self.http.get(f"/chats/{chat_id}/messages/{message_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait_state(self, chat_id: str, message_id: str, *states: str, timeout: float = 20) -> dict[str, Any]:
        return dict(
            wait_for(
                lambda: (m := self.message(chat_id, message_id))["state"] in states and m,
                timeout,
                f"message {message_id} to reach {states}",
            )
        )

    def events(self, chat_id: str, message_id: str) -> list[dict[str, Any]]:
        with self.http.stream("GET", f"/chats/{chat_id}/messages/{message_id}/events") as r:
            assert r.status_code == 200
            return list(sse_events(r))


@pytest.fixture
def chat_factory() -> Iterator[Callable[[str], ChatSession]]:
    sessions: list[ChatSession] = []

    def make(base_url: str, user_id: str = "alice") -> ChatSession:
        sessions.append(ChatSession(base_url, user_id))
        return sessions[-1]

    yield make
    for s in sessions:
        s.close()
