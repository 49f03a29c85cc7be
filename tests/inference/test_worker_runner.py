"""The worker's websocket loop against a small real websocket server (Starlette under uvicorn) that
speaks the protocol: hello, capacity, streaming, cancel, heartbeat, refusal, reconnect, stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvicorn
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from oasst.inference.protocol import (
    PROTOCOL_VERSION,
    CancelWork,
    ChatTurn,
    DoneEvent,
    FinishReason,
    Pong,
    Refused,
    Role,
    SamplingParameters,
    TokenEvent,
    Usage,
    WorkRequest,
)
from oasst.inference.worker.engines import Finished, GenerationEvent
from oasst.inference.worker.runner import WorkerRefused, WorkerRunner, WorkerSettings, coalesce, worker_url

KEY = "worker-key-123"


@contextlib.asynccontextmanager
async def serving(app: Any, port: int = 0) -> AsyncIterator[int]:
    """Serve an ASGI app with uvicorn in this event loop; yields the port."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        ws="websockets-sansio",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


async def wait_until(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for a condition")
        await asyncio.sleep(0.01)


class FakeEngine:
    """Yields ``t0 t1 …`` (max_new_tokens of them) with a pause each; records concurrency and cancels."""

    kind = "fake"
    model_name = "fake-model"
    context_length = 1024

    def __init__(self, max_parallel: int = 2, delay: float = 0.01) -> None:
        self.max_parallel = max_parallel
        self.delay = delay
        self.running = 0
        self.peak = 0
        self.cancelled: list[str] = []
        self.abandoned: list[str] = []

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def generate(
        self, request: WorkRequest, cancel: threading.Event | None = None
    ) -> AsyncIterator[GenerationEvent]:
        cancel = cancel or threading.Event()
        self.running += 1
        self.peak = max(self.peak, self.running)
        n = request.sampling.max_new_tokens
        try:
            for i in range(n):
                if cancel.is_set():
                    self.cancelled.append(request.id)
                    yield Finished(FinishReason.cancelled, Usage(prompt_tokens=3, completion_tokens=i))
                    return
                await asyncio.sleep(self.delay)
                yield f"t{i} "
            yield Finished(FinishReason.length, Usage(prompt_tokens=3, completion_tokens=n))
        except asyncio.CancelledError:
            self.abandoned.append(request.id)
            raise
        finally:
            self.running -= 1


class FakeServer:
    """The server side of the worker websocket, scripted by the test."""

    def __init__(self, *, refuse: Refused | None = None, reject: bool = False) -> None:
        self.refuse = refuse
        self.reject = reject
        self.headers: list[dict[str, str]] = []
        self.received: list[dict[str, Any]] = []
        self.connections = 0
        self.socket: WebSocket | None = None
        self.app = Starlette(routes=[WebSocketRoute("/workers/ws", self.endpoint)])

    async def endpoint(self, ws: WebSocket) -> None:
        self.headers.append(dict(ws.headers))
        if self.reject:
            await ws.close(code=1008)  # before accepting: the client sees HTTP 403
            return
        await ws.accept()
        self.connections += 1
        if self.refuse is not None:
            await ws.send_text(self.refuse.model_dump_json())
            await ws.close(code=1008)
            return
        self.socket = ws
        try:
            while True:
                message = json.loads(await ws.receive_text())
                self.received.append(message)
                if message["type"] == "ping":
                    await ws.send_text(Pong().model_dump_json())
        except WebSocketDisconnect:
            pass

    async def send(self, message: BaseModel) -> None:
        assert self.socket is not None
        await self.socket.send_text(message.model_dump_json())

    def of_type(self, kind: str, rid: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.received if m["type"] == kind and (rid is None or m.get("id") == rid)]


def work(rid: str, tokens: int = 5) -> WorkRequest:
    return WorkRequest(
        id=rid,
        model="fake-model",
        messages=[ChatTurn(role=Role.user, content="hi")],
        sampling=SamplingParameters(max_new_tokens=tokens),
    )


def settings(port: int, **overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "heartbeat_s": 5.0,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
        **overrides,
    }
    return WorkerSettings(server_url=f"http://127.0.0.1:{port}", api_key=KEY, name="w1", **values)


@contextlib.asynccontextmanager
async def worker(runner: WorkerRunner) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def test_worker_url() -> None:
    assert worker_url("http://h:8081") == "ws://h:8081/workers/ws"
    assert worker_url("https://h/") == "wss://h/workers/ws"
    assert worker_url("ws://h:1/custom/path") == "ws://h:1/custom/path"
    with pytest.raises(ValueError):
        worker_url("ftp://h")


def test_coalesce_merges_tokens_per_request_in_order() -> None:
    batch: list[BaseModel] = [
        TokenEvent(id="a", text="1"),
        TokenEvent(id="b", text="x"),
        TokenEvent(id="a", text="2"),
        DoneEvent(id="a", text="12"),
        TokenEvent(id="b", text="y"),
    ]
    assert [m.model_dump() for m in coalesce(batch)] == [
        TokenEvent(id="a", text="12").model_dump(),
        TokenEvent(id="b", text="xy").model_dump(),
        DoneEvent(id="a", text="12").model_dump(),
    ]


def test_hello_capacity_streaming_and_never_more_than_max_parallel() -> None:
    async def main() -> None:
        server = FakeServer()
        engine = FakeEngine(max_parallel=2)
        async with serving(server.app) as port, worker(WorkerRunner(engine, settings(port))):
            await wait_until(lambda: server.of_type("hello"))
            hello = server.of_type("hello")[0]
            assert hello["model"] == "fake-model" and hello["max_parallel"] == 2
            assert hello["context_length"] == 1024 and hello["engine"] == "fake" and hello["name"] == "w1"
            assert hello["protocol_version"] == PROTOCOL_VERSION
            headers = server.headers[0]
            assert headers["authorization"] == f"Bearer {KEY}"
            assert headers["x-protocol-version"] == str(PROTOCOL_VERSION)
            for i in range(5):  # more than the worker's slots at once
                await server.send(work(f"w{i}", tokens=8))
            await wait_until(lambda: len(server.of_type("done")) == 5)
        assert engine.peak == 2
        for i in range(5):
            tokens = server.of_type("token", f"w{i}")
            done = server.of_type("done", f"w{i}")[0]
            assert "".join(t["text"] for t in tokens) == done["text"] == "".join(f"t{k} " for k in range(8))
            assert done["finish_reason"] == "length"
            assert done["usage"] == {"prompt_tokens": 3, "completion_tokens": 8}
            # tokens arrive before the final message
            assert server.received.index(tokens[0]) < server.received.index(done)

    asyncio.run(main())


def test_first_token_is_not_delayed_and_later_tokens_are_coalesced() -> None:
    async def main() -> None:
        server = FakeServer()
        engine = FakeEngine(max_parallel=1, delay=0.0005)
        runner = WorkerRunner(engine, settings(0, coalesce_s=0.02))
        async with serving(server.app) as port:
            runner.url = worker_url(f"http://127.0.0.1:{port}")
            async with worker(runner):
                await wait_until(lambda: server.of_type("hello"))
                await server.send(work("c", tokens=200))
                await wait_until(lambda: server.of_type("done", "c"))
        tokens = server.of_type("token", "c")
        assert tokens[0]["text"] == "t0 "
        assert len(tokens) < 100  # 200 tokens, far fewer messages
        assert "".join(t["text"] for t in tokens) == server.of_type("done", "c")[0]["text"]

    asyncio.run(main())


def test_the_end_of_an_answer_is_not_held_back_by_the_coalescing_pause() -> None:
    async def main() -> None:
        server = FakeServer()
        engine = FakeEngine(delay=0.001)
        async with serving(server.app) as port, worker(WorkerRunner(engine, settings(port, coalesce_s=30))):
            await wait_until(lambda: server.of_type("hello"))
            await server.send(work("quick", tokens=4))
            await wait_until(lambda: server.of_type("done", "quick"), timeout=5)  # not after 30 s
        tokens = "".join(t["text"] for t in server.of_type("token", "quick"))
        assert tokens == server.of_type("done", "quick")[0]["text"] == "t0 t1 t2 t3 "

    asyncio.run(main())


def test_cancel_is_honoured() -> None:
    async def main() -> None:
        server = FakeServer()
        engine = FakeEngine(max_parallel=1, delay=0.02)
        async with serving(server.app) as port, worker(WorkerRunner(engine, settings(port))):
            await wait_until(lambda: server.of_type("hello"))
            await server.send(work("long", tokens=500))
            await wait_until(lambda: server.of_type("token", "long"))
            await server.send(CancelWork(id="long"))
            await wait_until(lambda: server.of_type("done", "long"), timeout=2)
        done = server.of_type("done", "long")[0]
        assert done["finish_reason"] == "cancelled"
        assert 0 < done["usage"]["completion_tokens"] < 500
        assert engine.cancelled == ["long"]

    asyncio.run(main())


def test_deadline_cancels_the_generation() -> None:
    async def main() -> None:
        server = FakeServer()
        engine = FakeEngine(max_parallel=1, delay=0.02)
        async with serving(server.app) as port, worker(WorkerRunner(engine, settings(port))):
            await wait_until(lambda: server.of_type("hello"))
            await server.send(work("slow", tokens=500).model_copy(update={"deadline_s": 0.2}))
            await wait_until(lambda: server.of_type("done", "slow"), timeout=3)
        assert server.of_type("done", "slow")[0]["finish_reason"] == "cancelled"

    asyncio.run(main())


def test_pings_every_heartbeat() -> None:
    async def main() -> None:
        server = FakeServer()
        async with (
            serving(server.app) as port,
            worker(WorkerRunner(FakeEngine(), settings(port, heartbeat_s=0.1))),
        ):
            await wait_until(lambda: len(server.of_type("ping")) >= 3, timeout=3)
            assert server.connections == 1  # pongs keep the connection alive

    asyncio.run(main())


def test_silent_server_is_detected_and_the_worker_reconnects() -> None:
    async def main() -> None:
        server = FakeServer()

        async def silent(ws: WebSocket) -> None:  # accepts, never answers pings
            server.connections += 1
            await ws.accept()
            with contextlib.suppress(WebSocketDisconnect):
                while True:
                    await ws.receive_text()

        app = Starlette(routes=[WebSocketRoute("/workers/ws", silent)])
        async with serving(app) as port, worker(WorkerRunner(FakeEngine(), settings(port, heartbeat_s=0.05))):
            await wait_until(lambda: server.connections >= 2, timeout=5)

    asyncio.run(main())


def test_reconnects_after_server_restart_and_abandons_in_flight_work() -> None:
    async def main() -> None:
        server = FakeServer()
        engine = FakeEngine(max_parallel=1, delay=0.05)
        runner = WorkerRunner(engine, settings(0))
        async with serving(server.app) as port:
            runner.url = worker_url(f"http://127.0.0.1:{port}")
            task = asyncio.create_task(runner.run(stop := asyncio.Event()))
            await wait_until(lambda: server.of_type("hello"))
            await server.send(work("lost", tokens=1000))
            await wait_until(lambda: server.of_type("token", "lost"))
        # the server is gone: the in-flight work is abandoned, the worker keeps trying
        await wait_until(lambda: engine.abandoned == ["lost"] and not runner.jobs)
        await asyncio.sleep(0.3)
        async with serving(server.app, port=port):
            await wait_until(lambda: len(server.of_type("hello")) == 2)
            await server.send(work("after", tokens=3))
            await wait_until(lambda: server.of_type("done", "after"))
        stop.set()
        await asyncio.wait_for(task, 5)
        assert runner.connections == 2
        assert not server.of_type("done", "lost")

    asyncio.run(main())


def test_backoff_starts_afresh_once_a_connection_was_made(caplog: pytest.LogCaptureFixture) -> None:
    def delays() -> list[float]:
        return [float(m) for m in re.findall(r"retrying in ([0-9.]+) s", caplog.text)]

    async def main() -> None:
        server = FakeServer()
        with contextlib.closing(__import__("socket").socket()) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        runner = WorkerRunner(FakeEngine(), settings(port, backoff_initial_s=0.02, backoff_max_s=0.08))
        task = asyncio.create_task(runner.run(stop := asyncio.Event()))
        await wait_until(lambda: len(delays()) >= 4)  # nothing listens yet: the backoff grows to its cap
        async with serving(server.app, port=port):
            await wait_until(lambda: runner.connections == 1)  # the server answered the first ping
            seen = len(delays())
            assert server.socket is not None
            await server.socket.close()  # a connection that was made is lost
            await wait_until(lambda: len(server.of_type("hello")) == 2)
        stop.set()
        await asyncio.wait_for(task, 5)
        assert delays()[:4] == [0.02, 0.04, 0.08, 0.08]
        assert delays()[seen] == 0.02  # not the cap the failed attempts had reached

    with caplog.at_level(logging.WARNING, logger="oasst.inference.worker.runner"):
        asyncio.run(main())


def test_refused_ends_the_worker_with_the_reason() -> None:
    async def main() -> None:
        server = FakeServer(refuse=Refused(code="bad_key", message="unknown worker key"))
        async with serving(server.app) as port:
            with pytest.raises(WorkerRefused, match="unknown worker key") as caught:
                await asyncio.wait_for(WorkerRunner(FakeEngine(), settings(port)).run(), 5)
        assert caught.value.code == "bad_key"
        assert server.connections == 1  # no retries

    asyncio.run(main())


def test_rejected_handshake_is_a_refusal() -> None:
    async def main() -> None:
        server = FakeServer(reject=True)
        async with serving(server.app) as port:
            with pytest.raises(WorkerRefused, match="HTTP 403"):
                await asyncio.wait_for(WorkerRunner(FakeEngine(), settings(port)).run(), 5)

    asyncio.run(main())


def test_stop_ends_run_cleanly_also_while_waiting_to_reconnect() -> None:
    async def main() -> None:
        with contextlib.closing(__import__("socket").socket()) as sock:
            sock.bind(("127.0.0.1", 0))
            free_port = sock.getsockname()[1]
        runner = WorkerRunner(FakeEngine(), settings(free_port, backoff_initial_s=5))
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        await asyncio.sleep(0.2)  # connection refused; now in backoff
        stop.set()
        await asyncio.wait_for(task, 2)

    asyncio.run(main())
