"""Per-message event logs (replayable, any number of readers) and the cancel broadcast.

A message's log holds its ``token`` events and then one final ``message`` or ``error`` event, as the
JSON of the protocol's stream events. A worker's answer is also announced by an internal ``answered``
event (its text, finish reason and token counts) just before it is stored: ``/v1`` ends a choice on it,
since the API's callers never read the stored row, while the chat API's streams skip it and end on the
stored ``message``. Readers (SSE streams, the OpenAI API) replay from the start and
follow; nothing is consumed, so a reconnecting client or a second tab sees everything. In Redis a log is
a stream ``{prefix}ev:{message id}`` that expires ``event_ttl_s`` after its last event; in memory, a list
dropped ``event_ttl_s`` after its final event.

The cancel broadcast tells whichever process holds a message's worker connection to send ``CancelWork``
and free the slot (Redis pub/sub in production; a direct call in memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

import redis.asyncio as aioredis

log = logging.getLogger("oasst.inference.events")

Event = dict[str, Any]
FINAL_EVENTS = {"message", "error"}
ANSWERED = "answered"  # internal: the worker's answer, before it is stored (see the module's docs)


class EventLog(Protocol):
    async def publish(self, message_id: str, event: Event) -> None: ...
    async def read(self, message_id: str, cursor: str, timeout: float) -> tuple[list[Event], str]: ...
    async def all(self, message_id: str) -> list[Event]: ...


def answered_event(text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> Event:
    """The internal ``answered`` event: the same fields as the stored message's read of them."""
    return {
        "event_type": ANSWERED,
        "content": text,
        "finish_reason": finish_reason,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
    }


def streamed_text(events: list[Event]) -> tuple[bool, str]:
    """Whether any token was streamed, and the text the tokens make up."""
    tokens = [e.get("text", "") for e in events if e.get("event_type") == "token"]
    return bool(tokens), "".join(tokens)


class MemoryEventLog:
    """Event logs of one process (embedded mode). No lock: on one event loop nothing runs between a
    reader's check and its registering to be woken, and a publisher never waits for a reader, so a
    reader that goes away (a client disconnecting mid-wait) cannot hold up the worker's tokens."""

    def __init__(self, ttl_s: float) -> None:
        self._ttl = ttl_s
        self._logs: dict[str, list[Event]] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}

    async def publish(self, message_id: str, event: Event) -> None:
        self._logs.setdefault(message_id, []).append(event)
        for waiter in self._waiters.pop(message_id, set()):
            if not waiter.done():
                waiter.set_result(None)
        if event.get("event_type") in FINAL_EVENTS:
            asyncio.get_running_loop().call_later(self._ttl, self._logs.pop, message_id, None)

    async def read(self, message_id: str, cursor: str, timeout: float) -> tuple[list[Event], str]:
        start = int(cursor or 0)
        if len(self._logs.get(message_id, [])) <= start and timeout > 0:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(message_id, set()).add(waiter)
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await waiter
            finally:
                waiting = self._waiters.get(message_id)
                if waiting is not None:
                    waiting.discard(waiter)
                    if not waiting:
                        del self._waiters[message_id]
        events = self._logs.get(message_id, [])[start:]
        return list(events), str(start + len(events))

    async def all(self, message_id: str) -> list[Event]:
        return list(self._logs.get(message_id, []))


class RedisEventLog:
    def __init__(self, client: aioredis.Redis, prefix: str, ttl_s: int) -> None:
        self._r: Any = client  # redis-py's command typing is too loose to be useful here
        self._prefix = prefix
        self._ttl = ttl_s

    def _key(self, message_id: str) -> str:
        return f"{self._prefix}ev:{message_id}"

    async def publish(self, message_id: str, event: Event) -> None:
        key = self._key(message_id)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.xadd(key, {"e": json.dumps(event)})
            pipe.expire(key, self._ttl)
            await pipe.execute()

    async def read(self, message_id: str, cursor: str, timeout: float) -> tuple[list[Event], str]:
        after = cursor or "0-0"
        reply = await self._r.xread(
            {self._key(message_id): after}, count=1000, block=max(1, int(timeout * 1000))
        )
        events: list[Event] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                events.append(json.loads(fields["e"]))
                after = entry_id
        return events, after

    async def all(self, message_id: str) -> list[Event]:
        return [json.loads(f["e"]) for _id, f in await self._r.xrange(self._key(message_id))]


CancelHandler = Callable[[str], None]


class MemoryControl:
    """Cancel broadcast within one process."""

    def __init__(self) -> None:
        self._handlers: dict[str, CancelHandler] = {}

    def register(self, message_id: str, handler: CancelHandler) -> None:
        self._handlers[message_id] = handler

    def unregister(self, message_id: str) -> None:
        self._handlers.pop(message_id, None)

    async def cancel(self, message_id: str) -> None:
        self._dispatch(message_id)

    def _dispatch(self, message_id: str) -> None:
        handler = self._handlers.get(message_id)
        if handler is not None:
            handler(message_id)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisControl(MemoryControl):
    """Cancel broadcast over a pub/sub channel that every server process listens to."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        super().__init__()
        self._r: Any = client  # redis-py's command typing is too loose to be useful here
        self._channel = f"{prefix}control"
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def cancel(self, message_id: str) -> None:
        await self._r.publish(self._channel, message_id)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="inference-control")
        await asyncio.wait_for(self._ready.wait(), 10)

    async def _listen(self) -> None:
        while True:
            try:
                async with self._r.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    self._ready.set()
                    while True:
                        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                        if msg is not None and msg.get("type") == "message":
                            self._dispatch(str(msg["data"]))
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis restarted: resubscribe (cancels sent meanwhile are also swept)
                log.exception("control channel lost; resubscribing")
                await asyncio.sleep(1)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
