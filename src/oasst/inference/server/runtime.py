"""The moving parts behind the API: queue, event logs, worker registry, cancel broadcast and the sweeper.

One :class:`Runtime` per app. With ``redis_url`` set every piece of cross-process state lives in Redis
(and the database), so any process may take a request, hold a worker, serve a stream or sweep; without it
everything is in this process (the embedded mode, one process only).

Failure semantics, all enforced by conditional database updates so racing processes agree:

* stop → ``cancelled`` with the text streamed so far; the worker gets ``CancelWork``; its slot is freed.
* queue wait over ``queue_wait_timeout_s`` → ``timeout`` (error event ``timeout``).
* generation over ``generation_timeout_s`` → ``timeout`` with the partial text, and ``CancelWork``.
* a worker that closes its websocket, or stays silent over ``heartbeat_timeout_s``, or whose server
  process dies: its messages without streamed tokens go back to the front of the queue; those with
  tokens become ``failed`` (error event ``worker_failed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial
from http import HTTPStatus
from typing import Any

import redis.asyncio as aioredis

from oasst.inference.protocol import (
    ErrorStreamEvent,
    MessageState,
    MessageStreamEvent,
    SamplingParameters,
)
from oasst.inference.server.db import Database
from oasst.inference.server.errors import ErrorCode, InferenceError
from oasst.inference.server.events import (
    Event,
    EventLog,
    MemoryControl,
    MemoryEventLog,
    RedisControl,
    RedisEventLog,
    streamed_text,
)
from oasst.inference.server.models import ApiKey, Message
from oasst.inference.server.queue import (
    MemoryPrepared,
    MemoryQueue,
    PreparedRequests,
    RedisPrepared,
    RedisQueue,
    WorkQueue,
)
from oasst.inference.server.registry import MemoryRegistry, RedisRegistry, Registry
from oasst.inference.server.services import chats as chat_service
from oasst.inference.server.services import work
from oasst.inference.server.services.keys import VerifiedKeys, verify_key
from oasst.inference.server.settings import Settings
from oasst.ratelimit import Limit, MemoryRateLimiter, RateLimiter, RedisRateLimiter

log = logging.getLogger("oasst.inference")


def error_event(code: str, message: str) -> Event:
    return ErrorStreamEvent(error=code, message=message).model_dump(mode="json")


def final_event(message: Message) -> Event:
    """The last event of a finished message: the message itself, or an error with its code."""
    if message.state in {MessageState.complete.value, MessageState.cancelled.value}:
        read = chat_service.message_read(message)
        return MessageStreamEvent(message=read).model_dump(mode="json")
    code, _, text = (message.error or "").partition(": ")
    if not text:
        code, text = ("timeout" if message.state == MessageState.timeout.value else "worker_failed"), code
    return error_event(code, text)


class Runtime:
    def __init__(self, settings: Settings, database: Database) -> None:
        self.settings = settings
        self.db = database
        self.redis: aioredis.Redis | None = None
        self.queue: WorkQueue = MemoryQueue()
        self.prepared: PreparedRequests = MemoryPrepared()
        self.events: EventLog = MemoryEventLog(settings.event_ttl_s)
        self.registry: Registry = MemoryRegistry()
        self.control: MemoryControl = MemoryControl()
        self.local_sessions: set[str] = set()
        # the original's limit on asked-for replies (20 per 600 s per user), shared through Redis when set
        self.reply_limiter: RateLimiter = MemoryRateLimiter()
        self.verified_keys = VerifiedKeys(settings.key_cache_s)
        self._sweeper: asyncio.Task[None] | None = None

    async def verify_key(self, key: str, kind: str) -> ApiKey:
        """The enabled key of ``kind`` (401/403 otherwise), from :class:`VerifiedKeys` when it can be."""
        row = self.verified_keys.get(key, kind)
        if row is None:
            row = await self.db.aread(lambda s: verify_key(s, key, kind=kind))
            self.verified_keys.put(key, kind, row)
        return row

    async def check_reply_limit(self, user_id: str, replies: int) -> None:
        """Count ``replies`` asked-for assistant replies of ``user_id``; 429 once over the limit."""
        s = self.settings
        if s.reply_limit == 0:
            return
        limit = Limit(s.reply_limit, s.reply_limit_interval_s)
        wait = await asyncio.to_thread(self.reply_limiter.hit, f"replies:{user_id}", limit, replies)
        if wait:
            raise InferenceError(
                f"Too many replies asked for: at most {limit.requests} per {limit.interval_sec} s. "
                f"Try again in {wait} s.",
                ErrorCode.TOO_MANY_REPLIES,
                HTTPStatus.TOO_MANY_REQUESTS,
                retry_after=wait,
            )

    async def start(self) -> None:
        s = self.settings
        if s.redis_url:
            self.redis = aioredis.Redis.from_url(s.redis_url, decode_responses=True, health_check_interval=30)
            await self.redis.ping()
            self.queue = RedisQueue(self.redis, s.redis_key_prefix)
            self.prepared = RedisPrepared(self.redis, s.redis_key_prefix)
            self.events = RedisEventLog(self.redis, s.redis_key_prefix, s.event_ttl_s)
            self.registry = RedisRegistry(self.redis, s.redis_key_prefix)
            self.control = RedisControl(self.redis, s.redis_key_prefix)
            self.reply_limiter = RedisRateLimiter(s.redis_url, prefix=f"{s.redis_key_prefix}rl:")
        else:
            self.queue = MemoryQueue()
            self.prepared = MemoryPrepared()
            self.events = MemoryEventLog(s.event_ttl_s)
            self.registry = MemoryRegistry()
            self.control = MemoryControl()
        await self.control.start()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="inference-sweeper")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.control.close()
        if self.redis is not None:
            await self.redis.aclose()

    # -- models ---------------------------------------------------------------------------------------

    async def served_models(self) -> dict[str, dict[str, int]]:
        """Models with live workers: {model: {"workers": n, "context_length": max}}."""
        live, _ = await self.registry.sessions(alive_within=self.settings.heartbeat_timeout_s)
        models: dict[str, dict[str, int]] = {}
        for info in live.values():
            entry = models.setdefault(str(info.get("model", "")), {"workers": 0, "context_length": 0})
            entry["workers"] += 1
            entry["context_length"] = max(entry["context_length"], int(info.get("context_length", 0)))
        return models

    async def check_model(self, model: str) -> None:
        if model in self.settings.configured_models or model in await self.served_models():
            return
        raise InferenceError(
            f"Unknown model {model!r}: no worker serves it and it is not configured.",
            ErrorCode.MODEL_UNKNOWN,
            HTTPStatus.NOT_FOUND,
        )

    def resolve_sampling(
        self, model: str, preset: str | None, sampling: SamplingParameters | None
    ) -> SamplingParameters:
        if sampling is not None:
            return sampling
        presets = self.settings.presets_for(model)
        if preset is not None:
            if preset not in presets:
                raise InferenceError(
                    f"Model {model!r} has no preset {preset!r}; it has {sorted(presets)}.",
                    ErrorCode.PRESET_UNKNOWN,
                )
            return presets[preset]
        return next(iter(presets.values()), SamplingParameters())

    # -- dispatch -------------------------------------------------------------------------------------

    async def enqueue(self, model: str, ids: list[str]) -> None:
        """Queue just-created pending messages, or take them back and answer 503 when the queue is full."""
        if await self.queue.push(model, ids, max_size=self.settings.queue_max_size):
            return
        await self.db.awrite(lambda s: chat_service.delete_messages(s, ids))
        raise self.queue_full(model)

    def queue_full(self, model: str) -> InferenceError:
        return InferenceError(
            f"The queue for {model!r} is full; retry later.",
            ErrorCode.QUEUE_FULL,
            HTTPStatus.SERVICE_UNAVAILABLE,
            retry_after=self.settings.queue_retry_after_s,
        )

    async def end(
        self, message_id: str, model: str, *, state: MessageState, code: str, text: str
    ) -> Message | None:
        """End an active message here (stop, timeouts); None if it had already ended."""
        _, partial = streamed_text(await self.events.all(message_id))
        error = None if state == MessageState.cancelled else f"{code}: {text}"
        message = await self.db.awrite(
            lambda s: work.finish(s, message_id, state=state, error=error, text=partial)
        )
        if message is None:
            return None
        await self.queue.remove(model, message_id)
        await self.prepared.drop([message_id])
        await self.events.publish(message_id, final_event(message))
        await self.control.cancel(message_id)
        return message

    async def stop(self, message_id: str, model: str) -> Message | None:
        return await self.end(
            message_id, model, state=MessageState.cancelled, code="cancelled", text="Stopped by the user."
        )

    async def recover_session(self, session_id: str, model: str | None) -> None:
        """A worker session ended: requeue what it had not started streaming, fail the rest."""
        if model:
            await self.queue.release(session_id, model)
        for message_id, msg_model in await self.db.aread(
            lambda s: work.in_progress_of_session(s, session_id)
        ):
            has_tokens, text = streamed_text(await self.events.all(message_id))
            if not has_tokens:
                back = await self.db.awrite(
                    partial(work.requeue, message_id=message_id, session_id=session_id)
                )
                if back is not None:
                    await self.queue.push_front(msg_model, message_id)
                    log.info("requeued %s after its worker session %s ended", message_id, session_id)
                continue
            failed = await self.db.awrite(
                partial(
                    work.finish,
                    message_id=message_id,
                    state=MessageState.failed,
                    error="worker_failed: The worker generating this message stopped responding.",
                    text=text,
                    session_id=session_id,
                    from_states=(MessageState.in_progress.value,),
                )
            )
            if failed is not None:
                await self.events.publish(message_id, final_event(failed))
        await self.registry.remove(session_id)

    # -- sweeper --------------------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sweep failed; retrying next interval")

    async def sweep(self) -> None:
        """Time limits and dead sessions, wherever their requests or workers were (idempotent)."""
        s = self.settings
        live, dead = await self.registry.sessions(alive_within=s.heartbeat_timeout_s)
        for session_id, info in dead.items():
            if session_id not in self.local_sessions:  # our own sessions watch themselves
                await self.recover_session(session_id, str(info.get("model") or ""))
        busy = await self.db.aread(work.in_progress_sessions)
        for session_id in busy - set(live) - set(dead) - self.local_sessions:
            await self.recover_session(session_id, None)
        for message_id, model in await self.db.aread(
            lambda x: work.overdue_pending(x, waited_s=s.queue_wait_timeout_s)
        ):
            await self.end(
                message_id,
                model,
                state=MessageState.timeout,
                code="timeout",
                text="No worker was free in time.",
            )
        for message_id, model in await self.db.aread(
            lambda x: work.overdue_in_progress(x, running_s=s.generation_timeout_s)
        ):
            await self.end(
                message_id,
                model,
                state=MessageState.timeout,
                code="timeout",
                text="Generation took too long.",
            )

    def describe(self) -> dict[str, Any]:
        return {"mode": "redis" if self.redis is not None else "embedded"}
