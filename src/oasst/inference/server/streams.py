"""Following a message's event log: the SSE stream of the chat API, and the reader behind /v1.

A reader replays the log from its start and then follows it until the final ``message``/``error`` event.
While the message waits in the queue it sees ``pending`` events with its 1-based queue position. If the
log has no final event although the database says the message ended (a log expired, a process died
between the two writes), the final event is made from the database row, so no reader waits forever.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Send

from oasst.inference.protocol import FINAL_STATES, MessageState, PendingStreamEvent
from oasst.inference.server.events import ANSWERED, FINAL_EVENTS, Event
from oasst.inference.server.models import Message
from oasst.inference.server.runtime import Runtime, final_event

KEEP_ALIVE: Event = {}  # an idle tick: lets the response notice a client that went away


class EventStreamResponse(StreamingResponse):
    """``text/event-stream`` that always closes its generator, so its ``finally`` runs on disconnect."""

    def __init__(self, content: AsyncIterator[str], *, headers: dict[str, str] | None = None) -> None:
        base = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(content, media_type="text/event-stream", headers={**base, **(headers or {})})

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()


def sse(data: Any) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _load(rt: Runtime, message_id: str) -> Message | None:
    return await rt.db.aread(lambda s: s.get(Message, message_id))


async def follow(rt: Runtime, message_id: str, model: str, *, pending: bool) -> AsyncGenerator[Event, None]:
    """The message's events up to and including the final one; ``KEEP_ALIVE`` on idle intervals."""
    interval = rt.settings.pending_event_interval_s
    cursor, seen_token, idle, first = "", False, 0, True
    while True:
        events, cursor = await rt.events.read(message_id, cursor, 0.0 if first else interval)
        first = False
        for event in events:
            yield event
            if event.get("event_type") in FINAL_EVENTS:
                return
            seen_token = True
        if events:
            idle = 0
            continue
        idle += 1
        position = None
        if pending and not seen_token:
            position, size = await rt.queue.position(model, message_id)
            if position is not None:
                yield PendingStreamEvent(queue_position=position, queue_size=size).model_dump(mode="json")
        if position is None:
            yield KEEP_ALIVE
        if idle % 5 == 1:
            row = await _load(rt, message_id)
            if row is None or MessageState(row.state) in FINAL_STATES:
                events, cursor = await rt.events.read(message_id, cursor, 0.0)
                for event in events:
                    yield event
                    if event.get("event_type") in FINAL_EVENTS:
                        return
                if row is not None:
                    yield final_event(row)
                return


async def message_sse(rt: Runtime, message_id: str, model: str) -> AsyncIterator[str]:
    finished = False
    try:
        async for event in follow(rt, message_id, model, pending=True):
            if event is KEEP_ALIVE:
                yield ": keep-alive\n\n"
                continue
            if event.get("event_type") == ANSWERED:
                continue  # internal (for /v1); this stream ends on the stored message
            finished = event.get("event_type") in FINAL_EVENTS
            yield sse(event)
    finally:
        if not finished and rt.settings.cancel_on_disconnect:
            with anyio.CancelScope(shield=True):
                await rt.stop(message_id, model)
