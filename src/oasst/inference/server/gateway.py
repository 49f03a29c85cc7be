"""The worker websocket (``/workers/ws``): one coroutine group per connected worker, in any process.

The worker authenticates with ``Authorization: Bearer <worker key>`` and ``X-Protocol-Version``, says
:class:`WorkerHello`, and from then on:

* the server pulls a message id from the model's queue only while the worker has a free slot
  (``max_parallel``), marks it in progress and sends :class:`WorkRequest`;
* tokens are appended to the message's event log as they come; ``done`` persists the text; ``error``
  fails the message (``engine_error``);
* a stop, a timeout or a disconnected client elsewhere reaches this process through the cancel
  broadcast: the server sends :class:`CancelWork` and frees the slot at once;
* any frame counts as a heartbeat (workers send ``ping`` when idle, answered with ``pong``); silence
  over ``heartbeat_timeout_s`` closes the connection. On any end, the session's work is recovered
  (see :mod:`oasst.inference.server.runtime`).

A malformed frame or one about a message the session no longer holds is logged and ignored: one bad
request never tears down the connection and its other requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from fastapi import WebSocket
from pydantic import TypeAdapter, ValidationError
from starlette.websockets import WebSocketDisconnect

from oasst.inference.protocol import (
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    CancelWork,
    DoneEvent,
    ErrorEvent,
    MessageState,
    Ping,
    Pong,
    Refused,
    TokenEvent,
    TokenStreamEvent,
    WorkerHello,
    WorkerToServer,
    WorkRequest,
)
from oasst.inference.server.auth import bearer
from oasst.inference.server.errors import InferenceError
from oasst.inference.server.events import answered_event, streamed_text
from oasst.inference.server.ids import new_id
from oasst.inference.server.runtime import Runtime, final_event
from oasst.inference.server.services import keys as key_service
from oasst.inference.server.services import work

log = logging.getLogger("oasst.inference.gateway")

_FRAMES: TypeAdapter[WorkerToServer] = TypeAdapter(WorkerToServer)

CLOSE_UNAUTHORIZED = 4401
CLOSE_PROTOCOL = 4426
CLOSE_BAD_HELLO = 4400
CLOSE_HEARTBEAT = 4408
CLOSE_SERVER_ERROR = 1011


def storable(text: str) -> str:
    """A model may emit a NUL character (a random or broken model easily does); PostgreSQL cannot store
    one, and the reply would never be saved. It becomes U+FFFD, as any undecodable byte does."""
    return text.replace("\x00", "\ufffd")


def apply_stop(text: str, stops: list[str]) -> str:
    """Cut the text at the first stop string (the worker should already have; this makes sure)."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


@dataclass
class Job:
    message_id: str
    stop: list[str] = field(default_factory=list)
    tokens: int = 0
    # set once the start is recorded (a prepared request goes to the worker while it is being recorded)
    recorded: asyncio.Event = field(default_factory=asyncio.Event)


async def _refuse(ws: WebSocket, code: str, message: str, close_code: int) -> None:
    with contextlib.suppress(Exception):
        await ws.send_text(Refused(code=code, message=message).model_dump_json())
        await ws.close(code=close_code)


async def serve_worker(ws: WebSocket, rt: Runtime) -> None:
    await ws.accept()
    try:
        key = bearer(ws.headers.get("authorization"))
        row = await rt.db.aread(lambda s: key_service.verify_key(s, key, kind="worker"))
    except InferenceError as exc:
        await _refuse(ws, exc.error_code.name.lower(), exc.message, CLOSE_UNAUTHORIZED)
        return
    if ws.headers.get(PROTOCOL_HEADER) != str(PROTOCOL_VERSION):
        message = f"This server speaks protocol version {PROTOCOL_VERSION}; upgrade the worker."
        await _refuse(ws, "protocol_version_unsupported", message, CLOSE_PROTOCOL)
        return
    try:
        async with asyncio.timeout(rt.settings.heartbeat_timeout_s):
            hello = _FRAMES.validate_json(await ws.receive_text())
    except (TimeoutError, ValidationError, WebSocketDisconnect, KeyError):
        await _refuse(ws, "bad_hello", "Send a hello frame first.", CLOSE_BAD_HELLO)
        return
    if not isinstance(hello, WorkerHello) or hello.protocol_version != PROTOCOL_VERSION:
        await _refuse(
            ws, "bad_hello", f"Send a hello frame of protocol {PROTOCOL_VERSION} first.", CLOSE_BAD_HELLO
        )
        return
    await WorkerSession(ws, rt, hello, key_id=row.id).run()


class WorkerSession:
    def __init__(self, ws: WebSocket, rt: Runtime, hello: WorkerHello, *, key_id: str) -> None:
        self.ws = ws
        self.rt = rt
        self.hello = hello
        self.key_id = key_id
        self.id = new_id()
        self.jobs: dict[str, Job] = {}
        self.room = asyncio.Event()
        self.room.set()
        self.last_seen = time.monotonic()
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def _update_room(self) -> None:
        if len(self.jobs) < self.hello.max_parallel:
            self.room.set()
        else:
            self.room.clear()

    async def _send(self, frame: WorkRequest | CancelWork | Pong) -> None:
        async with self._send_lock:
            await self.ws.send_text(frame.model_dump_json())

    async def run(self) -> None:
        rt = self.rt
        info = {
            "model": self.hello.model,
            "max_parallel": self.hello.max_parallel,
            "context_length": self.hello.context_length,
            "engine": self.hello.engine,
            "key_id": self.key_id,
        }
        rt.local_sessions.add(self.id)
        await rt.registry.register(self.id, info)
        log.info("worker session %s connected: %s x%d", self.id, self.hello.model, self.hello.max_parallel)
        tasks = [
            asyncio.create_task(self._receive(), name=f"worker-{self.id}-receive"),
            asyncio.create_task(self._pull(), name=f"worker-{self.id}-pull"),
            asyncio.create_task(self._watch(), name=f"worker-{self.id}-watch"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    exc = task.exception()
                    if not isinstance(exc, WebSocketDisconnect | ConnectionError):
                        log.error("worker session %s failed", self.id, exc_info=exc)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._tasks:  # starts still being recorded: let them land, so recovery sees them
                await asyncio.wait(list(self._tasks), timeout=5)
            for message_id in self.jobs:
                rt.control.unregister(message_id)
            self.jobs.clear()
            # shielded: recovering the session's work must finish even while the server shuts down
            await asyncio.shield(self._recover())
            with contextlib.suppress(Exception):
                await self.ws.close()

    async def _recover(self) -> None:
        try:
            await self.rt.recover_session(self.id, self.hello.model)
        finally:
            self.rt.local_sessions.discard(self.id)
            log.info("worker session %s ended", self.id)

    async def _watch(self) -> None:
        s = self.rt.settings
        while True:
            await asyncio.sleep(s.heartbeat_interval_s)
            if time.monotonic() - self.last_seen > s.heartbeat_timeout_s:
                log.warning("worker session %s silent for %.1f s: closing", self.id, s.heartbeat_timeout_s)
                with contextlib.suppress(Exception):
                    await self.ws.close(code=CLOSE_HEARTBEAT)
                return
            await self.rt.registry.touch(self.id)

    async def _pull(self) -> None:
        rt, s = self.rt, self.rt.settings
        while True:
            await self.room.wait()
            message_id = await rt.queue.pop(self.hello.model, self.id, min(1.0, s.heartbeat_interval_s))
            if message_id is None:
                continue
            prepared = await rt.prepared.take(message_id)
            if prepared is not None:
                # sent now, recorded in the background: the next id can be popped at once
                request = prepared.model_copy(update={"deadline_s": s.generation_timeout_s})
                self._spawn(self._start_prepared(request, self._take_on(request)))
                continue
            try:
                await self._start(message_id)
            except Exception:
                # not started: back to the front (in Redis, release() at the session's end does it too)
                await asyncio.shield(rt.queue.push_front(self.hello.model, message_id))
                await rt.queue.ack(self.id, message_id)
                raise
            await rt.queue.ack(self.id, message_id)

    async def _start(self, message_id: str) -> None:
        """Record the start, then send the request read back from the database."""
        s = self.rt.settings
        request = await self.rt.db.awrite(
            partial(
                work.start_work,
                message_id=message_id,
                session_id=self.id,
                worker_key_id=self.key_id,
                deadline_s=s.generation_timeout_s,
            )
        )
        if request is None:  # stopped or timed out while queued
            return
        job = self._take_on(request)
        job.recorded.set()
        await self._send(request)

    async def _start_prepared(self, request: WorkRequest, job: Job) -> None:
        """Send a request built at submit at once and record the start meanwhile (the worker's prefill
        hides that write). Its answer is not stored, nor its text shown, before the start is recorded.
        If the message ended while queued, the worker is told to cancel. If the start cannot be
        recorded, the session ends, as it does when a start read from the database fails: its worker
        reconnects, and the message goes back to the front of the queue for whichever session is next
        (not to this connection, where the attempt just abandoned could still be winding down)."""
        rt = self.rt
        started = failed = False
        try:
            await self._send(request)
            started = await rt.db.awrite(
                partial(
                    work.mark_started, message_id=request.id, session_id=self.id, worker_key_id=self.key_id
                )
            )
        except Exception:
            log.exception("worker session %s: could not start %s; ending the session", self.id, request.id)
            failed = True
        finally:
            released = None if started else self._release(request.id)
            job.recorded.set()
        if failed:
            with contextlib.suppress(Exception):
                await self.ws.close(code=CLOSE_SERVER_ERROR)
            await asyncio.shield(rt.queue.push_front(self.hello.model, request.id))
        await asyncio.shield(rt.queue.ack(self.id, request.id))
        if released is not None and not failed:  # it ended while queued; no cancel has reached the worker
            await self._send_quietly(CancelWork(id=request.id))

    def _take_on(self, request: WorkRequest) -> Job:
        job = Job(request.id, stop=list(request.sampling.stop))
        self.jobs[request.id] = job
        self.rt.control.register(request.id, self._on_cancel)
        self._update_room()
        return job

    def _on_cancel(self, message_id: str) -> None:
        """The message ended elsewhere (stop, timeout): tell the worker and free the slot."""
        if self._release(message_id) is None:
            return
        self._spawn(self._send_quietly(CancelWork(id=message_id)))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_quietly(self, frame: CancelWork) -> None:
        with contextlib.suppress(Exception):
            await self._send(frame)

    def _release(self, message_id: str) -> Job | None:
        job = self.jobs.pop(message_id, None)
        self.rt.control.unregister(message_id)
        self._update_room()
        return job

    async def _receive(self) -> None:
        while True:
            raw = await self.ws.receive_text()
            self.last_seen = time.monotonic()
            try:
                frame = _FRAMES.validate_json(raw)
            except ValidationError as exc:
                log.warning("worker session %s sent a bad frame: %s", self.id, exc.errors()[:1])
                continue
            if isinstance(frame, TokenEvent | DoneEvent):
                frame.text = storable(frame.text)
            if isinstance(frame, Ping):
                await self._send(Pong())
            elif isinstance(frame, TokenEvent):
                await self._on_token(frame)
            elif isinstance(frame, DoneEvent):
                await self._on_done(frame)
            elif isinstance(frame, ErrorEvent):
                await self._on_error(frame)

    async def _on_token(self, frame: TokenEvent) -> None:
        job = self.jobs.get(frame.id)
        if job is None:
            return
        if not job.recorded.is_set():  # rare: the prefill took less time than recording the start
            await job.recorded.wait()
            if self.jobs.get(frame.id) is not job:  # not started here: its text must not be shown
                return
        job.tokens += 1
        await self.rt.events.publish(frame.id, TokenStreamEvent(text=frame.text).model_dump(mode="json"))

    async def _recorded(self, message_id: str) -> Job | None:
        """The job of an answer, once its start is recorded; None if the message is no longer ours."""
        job = self.jobs.get(message_id)
        if job is not None:
            await job.recorded.wait()
        return self._release(message_id)

    async def _on_done(self, frame: DoneEvent) -> None:
        job = await self._recorded(frame.id)
        if job is None:
            return
        text = apply_stop(frame.text, job.stop)
        usage = frame.usage
        answered = answered_event(
            text, frame.finish_reason.value, usage.prompt_tokens, usage.completion_tokens
        )
        await self.rt.events.publish(frame.id, answered)
        try:
            message = await self.rt.db.awrite(
                lambda s: work.complete_work(
                    s,
                    frame.id,
                    session_id=self.id,
                    text=text,
                    finish_reason=frame.finish_reason,
                    usage=frame.usage,
                )
            )
        except Exception:
            # the reply could not be stored: end it as failed rather than leave its readers waiting
            log.exception("worker session %s: could not store the reply %s", self.id, frame.id)
            message = await self.rt.db.awrite(
                lambda s: work.finish(
                    s,
                    frame.id,
                    state=MessageState.failed,
                    error="store_failed: the reply could not be saved",
                    text="",
                    session_id=self.id,
                    from_states=(MessageState.in_progress.value,),
                )
            )
        if message is not None:
            await self.rt.events.publish(frame.id, final_event(message))

    async def _on_error(self, frame: ErrorEvent) -> None:
        job = await self._recorded(frame.id)
        if job is None:
            return
        _, partial = streamed_text(await self.rt.events.all(frame.id))
        message = await self.rt.db.awrite(
            lambda s: work.finish(
                s,
                frame.id,
                state=MessageState.failed,
                error=f"engine_error: {frame.message[:2000]}",
                text=partial,
                session_id=self.id,
                from_states=(MessageState.in_progress.value,),
            )
        )
        if message is not None:
            await self.rt.events.publish(frame.id, final_event(message))
