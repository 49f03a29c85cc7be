"""The worker's side of the websocket to the inference server.

One connection at a time: connect with the worker key and the protocol version, announce the model and
capacity (:class:`~oasst.inference.protocol.WorkerHello`) and ping at once — the server's first answer
confirms the session (only then does the worker count as connected) — then at once

* read: work requests start a job each (never more than ``max_parallel`` run in the engine; the server
  sends work only into free slots, and anything beyond is held here rather than dropped), cancels stop a
  job within a token, pongs prove the server is alive, a ``refused`` ends the worker with its reason;
* write: one writer task sends everything, in order per request. A request's first token goes out at
  once; later tokens that arrive within ``coalesce_s`` of each other share one message, so a fast model
  does not cost the server a message per token;
* heartbeat: a ping every ``heartbeat_s``; silence from the server for ``3 × heartbeat_s`` means the
  connection is dead.

When the connection is lost, in-flight work is abandoned (the server requeues or fails it) and the worker
reconnects with exponential backoff. ``stop`` (SIGINT/SIGTERM in the CLI) closes the connection cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, TypeAdapter, ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from oasst.inference.protocol import (
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    CancelWork,
    DoneEvent,
    ErrorEvent,
    Ping,
    Pong,
    Refused,
    ServerToWorker,
    TokenEvent,
    WorkerHello,
    WorkRequest,
)
from oasst.inference.worker.engines import Engine, EngineError, Finished

__all__ = [
    "WORKER_PATH",
    "WorkerRefused",
    "WorkerRunner",
    "WorkerSettings",
    "coalesce",
    "run_worker",
    "worker_url",
]

log = logging.getLogger(__name__)

WORKER_PATH = "/workers/ws"
FATAL_STATUSES = {401, 403, 426}  # a handshake the server will never accept: bad key, old protocol

_server_messages: TypeAdapter[Any] = TypeAdapter(ServerToWorker)


class WorkerRefused(Exception):
    """The server will not serve this worker (bad key, unsupported protocol version): retrying is useless."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message


class _ConnectionLost(Exception):
    pass


@dataclass
class WorkerSettings:
    server_url: str  # http(s)://host:port or ws(s)://host:port[/path]
    api_key: str
    name: str = ""
    heartbeat_s: float = 10.0
    coalesce_s: float = 0.005
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    open_timeout_s: float = 10.0


@dataclass
class _Job:
    request: WorkRequest
    cancel: threading.Event = field(default_factory=threading.Event)
    task: asyncio.Task[None] | None = None


def worker_url(server_url: str) -> str:
    """The websocket URL for a server's base URL: ``http`` → ``ws``, and ``/workers/ws`` unless a path is given."""
    parts = urlsplit(server_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in {"ws", "wss"}:
        raise ValueError(f"not an http(s) or ws(s) URL: {server_url!r}")
    path = parts.path if parts.path.rstrip("/") else WORKER_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


class WorkerRunner:
    """Serves an engine to an inference server until ``stop`` is set or the server refuses the worker."""

    def __init__(
        self,
        engine: Engine,
        settings: WorkerSettings,
        *,
        on_state: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.url = worker_url(settings.server_url)
        self.on_state = on_state or (lambda state: None)
        self.jobs: dict[str, _Job] = {}
        self.connections = 0  # sessions the server confirmed (answered), for logs and tests
        self._slots = asyncio.Semaphore(engine.max_parallel)
        self._outbox: asyncio.Queue[BaseModel] = asyncio.Queue()
        self._urgent = asyncio.Event()  # something other than a token waits: no coalescing pause
        self._last_heard = 0.0

    def hello(self) -> WorkerHello:
        return WorkerHello(
            model=self.engine.model_name,
            max_parallel=self.engine.max_parallel,
            context_length=self.engine.context_length,
            engine=self.engine.kind,
            name=self.settings.name,
        )

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Connect, serve, and reconnect with backoff until ``stop``. Raises :class:`WorkerRefused`.

        The backoff doubles while connecting fails and starts afresh once a connection was made, so a
        worker that lost a healthy connection is back within ``backoff_initial_s``, however many times
        that happened before.
        """
        stop = stop or asyncio.Event()
        delay = self.settings.backoff_initial_s
        while not stop.is_set():
            opened = self.connections
            try:
                await self._connect_and_serve(stop)
                problem = "the connection ended"
            except WorkerRefused:
                raise
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in FATAL_STATUSES:
                    raise WorkerRefused(
                        f"http_{status}", f"the server rejected the worker's connection with HTTP {status}"
                    ) from exc
                problem = f"the server answered HTTP {status}"
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, _ConnectionLost) as exc:
                problem = f"connection to {self.url} failed or lost ({exc})"
            if stop.is_set():
                break
            if self.connections > opened:
                delay = self.settings.backoff_initial_s
            log.warning("%s; retrying in %.3g s", problem, delay)
            self.on_state("waiting")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.settings.backoff_max_s)

    async def _connect_and_serve(self, stop: asyncio.Event) -> None:
        headers = {"Authorization": f"Bearer {self.settings.api_key}", PROTOCOL_HEADER: str(PROTOCOL_VERSION)}
        async with connect(
            self.url,
            additional_headers=headers,
            open_timeout=self.settings.open_timeout_s,
            max_size=2**24,
            ping_interval=None,  # the protocol's own Ping/Pong is the heartbeat
            # messages are small (a few tokens each, many per second): deflating them costs both ends more
            # CPU, on the worker's decoding core too, than the bytes it saves
            compression=None,
        ) as ws:
            await self._serve(ws, stop)

    async def _serve(self, ws: ClientConnection, stop: asyncio.Event) -> None:
        self._outbox, self._urgent = asyncio.Queue(), asyncio.Event()
        self._last_heard = asyncio.get_running_loop().time()
        try:
            await ws.send(self.hello().model_dump_json())
        except ConnectionClosed:
            await _raise_if_refused(ws)  # a server that refuses may close before reading the hello
            raise
        self._put(Ping())  # its pong confirms that the server took the hello
        tasks = [
            asyncio.create_task(self._reader(ws), name="reader"),
            asyncio.create_task(self._writer(ws), name="writer"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(stop.wait(), name="stop"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.get_name() != "stop" and (exc := task.exception()) is not None:
                    raise exc
            if not stop.is_set():
                raise _ConnectionLost("the server closed the connection")
        finally:
            await self._abandon_jobs()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.on_state("disconnected")

    async def _abandon_jobs(self) -> None:
        jobs = list(self.jobs.values())
        for job in jobs:
            job.cancel.set()
            if job.task is not None:
                job.task.cancel()
        await asyncio.gather(*(j.task for j in jobs if j.task is not None), return_exceptions=True)
        self.jobs.clear()

    # -- reading ------------------------------------------------------------------------------------------

    async def _reader(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        confirmed = False
        async for raw in ws:
            self._last_heard = loop.time()
            try:
                message = _server_messages.validate_json(raw)
            except ValidationError as exc:
                log.warning("ignoring a message the protocol does not know: %s", str(exc).splitlines()[0])
                continue
            if not confirmed and not isinstance(message, Refused):
                # the server answered: it registered this worker and may send work from now on
                confirmed = True
                self.connections += 1
                log.info("connected to %s as %s", self.url, self.engine.model_name)
                self.on_state("connected")
            if isinstance(message, WorkRequest):
                self._start(message)
            elif isinstance(message, CancelWork):
                if (job := self.jobs.get(message.id)) is not None:
                    job.cancel.set()
            elif isinstance(message, Refused):
                raise WorkerRefused(message.code, message.message)
            elif isinstance(message, Pong):
                pass
        close = ws.close_code
        raise _ConnectionLost(f"the server closed the connection (code {close})")

    def _start(self, request: WorkRequest) -> None:
        if request.id in self.jobs:
            log.warning("work %s is already running here; ignoring the duplicate", request.id)
            return
        if len(self.jobs) >= self.engine.max_parallel:
            log.warning(
                "got more work than max_parallel=%d; %s waits here", self.engine.max_parallel, request.id
            )
        job = _Job(request)
        self.jobs[request.id] = job
        job.task = asyncio.create_task(self._run_job(job), name=f"work-{request.id}")

    async def _run_job(self, job: _Job) -> None:
        request = job.request
        put = self._put
        try:
            async with self._slots:
                if job.cancel.is_set():
                    return
                with _deadline(request.deadline_s, job.cancel):
                    await self._generate(job, put)
        except EngineError as exc:
            put(ErrorEvent(id=request.id, message=str(exc)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("work %s failed", request.id)
            put(ErrorEvent(id=request.id, message=f"the engine failed: {exc.__class__.__name__}: {exc}"))
        finally:
            self.jobs.pop(request.id, None)

    async def _generate(self, job: _Job, put: Callable[[BaseModel], None]) -> None:
        pieces: list[str] = []
        finished: Finished | None = None
        async for event in self.engine.generate(job.request, job.cancel):
            if isinstance(event, Finished):
                finished = event
            elif event:
                pieces.append(event)
                put(TokenEvent(id=job.request.id, text=event))
        if finished is None:
            raise EngineError("the engine ended without finishing the generation")
        put(
            DoneEvent(
                id=job.request.id,
                text="".join(pieces),
                finish_reason=finished.finish_reason,
                usage=finished.usage,
            )
        )

    # -- writing ------------------------------------------------------------------------------------------

    def _put(self, message: BaseModel) -> None:
        self._outbox.put_nowait(message)
        if not isinstance(message, TokenEvent):
            self._urgent.set()  # an answer's end (or a ping) is not held back by the coalescing pause

    async def _writer(self, ws: ClientConnection) -> None:
        started: set[str] = set()  # requests whose first token has gone out
        while True:
            first = await self._outbox.get()
            if isinstance(first, TokenEvent) and first.id in started and self.settings.coalesce_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), self.settings.coalesce_s)
            self._urgent.clear()
            batch = [first]
            while not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            for message in coalesce(batch):
                if isinstance(message, TokenEvent):
                    started.add(message.id)
                elif isinstance(message, DoneEvent | ErrorEvent):
                    started.discard(message.id)
                await ws.send(message.model_dump_json())

    async def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.settings.heartbeat_s
        while True:
            await asyncio.sleep(interval)
            if loop.time() - self._last_heard > 3 * interval:
                raise _ConnectionLost(f"no message from the server for {3 * interval:.0f} s")
            self._put(Ping())


async def _raise_if_refused(ws: ClientConnection) -> None:
    """Read what the server sent before it closed the connection; raise if it was a refusal."""
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        while True:
            raw = await asyncio.wait_for(ws.recv(), 1.0)
            with contextlib.suppress(ValidationError):
                message = _server_messages.validate_json(raw)
                if isinstance(message, Refused):
                    raise WorkerRefused(message.code, message.message)


def coalesce(batch: list[BaseModel]) -> list[BaseModel]:
    """Merge each request's consecutive token events; keep every other message in place (order per request)."""
    out: list[BaseModel] = []
    open_tokens: dict[str, int] = {}  # request id -> index of its token event still open for merging
    for message in batch:
        if isinstance(message, TokenEvent):
            index = open_tokens.get(message.id)
            if index is not None:
                merged = out[index]
                assert isinstance(merged, TokenEvent)
                out[index] = TokenEvent(id=message.id, text=merged.text + message.text)
                continue
            open_tokens[message.id] = len(out)
        elif isinstance(message, DoneEvent | ErrorEvent):
            open_tokens.pop(message.id, None)
        out.append(message)
    return out


@contextlib.contextmanager
def _deadline(seconds: float | None, cancel: threading.Event) -> Any:
    """Cancel the generation after ``seconds`` (the text so far is still delivered)."""
    if seconds is None:
        yield
        return
    handle = asyncio.get_running_loop().call_later(seconds, cancel.set)
    try:
        yield
    finally:
        handle.cancel()


async def run_worker(engine: Engine, settings: WorkerSettings, stop: asyncio.Event | None = None) -> None:
    """Start the engine and serve it (see :class:`WorkerRunner`); closes the engine at the end."""
    await engine.start()
    try:
        await WorkerRunner(engine, settings).run(stop)
    finally:
        await engine.aclose()
