"""Per-model work queues of message ids: in-process (embedded) or Redis (any number of processes).

Both keep the same promises:

* ``push`` adds all of a request's ids or none, atomically checked against the size cap (a Lua script in
  Redis, no await between check and append in memory), so a full queue never overfills under races.
* ``pop`` hands an id to one worker session only. In Redis it is moved (``BLMOVE``) into that session's
  processing list until ``ack``; if the session or its process dies in between, ``release`` (or the
  sweeper of any other process) moves it back to the front. Nothing popped is lost.
* ``push_front`` (requeue after a dead worker) bypasses the cap: that work was already admitted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any, Protocol

import redis.asyncio as aioredis

from oasst.inference.protocol import WorkRequest

_PUSH_CAPPED = """
if redis.call('LLEN', KEYS[1]) + (#ARGV - 1) > tonumber(ARGV[1]) then return 0 end
for i = 2, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
return 1
"""


class WorkQueue(Protocol):
    async def push(self, model: str, ids: list[str], *, max_size: int) -> bool: ...
    async def push_front(self, model: str, message_id: str) -> None: ...
    async def pop(self, model: str, holder: str, timeout: float) -> str | None: ...
    async def ack(self, holder: str, message_id: str) -> None: ...
    async def release(self, holder: str, model: str) -> None: ...
    async def remove(self, model: str, message_id: str) -> None: ...
    async def position(self, model: str, message_id: str) -> tuple[int | None, int]: ...


class MemoryQueue:
    """One process, one event loop: an asyncio condition per model."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[str]] = {}
        self._conds: dict[str, asyncio.Condition] = {}

    def _q(self, model: str) -> tuple[deque[str], asyncio.Condition]:
        if model not in self._queues:
            self._queues[model] = deque()
            self._conds[model] = asyncio.Condition()
        return self._queues[model], self._conds[model]

    async def push(self, model: str, ids: list[str], *, max_size: int) -> bool:
        queue, cond = self._q(model)
        async with cond:
            if len(queue) + len(ids) > max_size:
                return False
            queue.extend(ids)
            cond.notify(len(ids))
        return True

    async def push_front(self, model: str, message_id: str) -> None:
        queue, cond = self._q(model)
        async with cond:
            queue.appendleft(message_id)
            cond.notify(1)

    async def pop(self, model: str, holder: str, timeout: float) -> str | None:
        queue, cond = self._q(model)
        async with cond:
            if not queue:
                try:
                    async with asyncio.timeout(timeout):
                        await cond.wait_for(lambda: bool(queue))
                except TimeoutError:
                    return None
            return queue.popleft()

    async def ack(self, holder: str, message_id: str) -> None:
        return None

    async def release(self, holder: str, model: str) -> None:
        return None

    async def remove(self, model: str, message_id: str) -> None:
        queue, _ = self._q(model)
        with contextlib.suppress(ValueError):
            queue.remove(message_id)

    async def position(self, model: str, message_id: str) -> tuple[int | None, int]:
        queue, _ = self._q(model)
        try:
            return queue.index(message_id) + 1, len(queue)
        except ValueError:
            return None, len(queue)


class RedisQueue:
    """``{prefix}q:{model}`` lists, and ``{prefix}proc:{holder}`` lists of popped, not yet started ids."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._r: Any = client  # redis-py's command typing is too loose to be useful here
        self._prefix = prefix
        self._push = client.register_script(_PUSH_CAPPED)

    def _key(self, model: str) -> str:
        return f"{self._prefix}q:{model}"

    def _proc(self, holder: str) -> str:
        return f"{self._prefix}proc:{holder}"

    async def push(self, model: str, ids: list[str], *, max_size: int) -> bool:
        return bool(await self._push(keys=[self._key(model)], args=[max_size, *ids]))

    async def push_front(self, model: str, message_id: str) -> None:
        await self._r.lpush(self._key(model), message_id)

    async def pop(self, model: str, holder: str, timeout: float) -> str | None:
        value = await self._r.blmove(self._key(model), self._proc(holder), timeout, "LEFT", "RIGHT")
        return str(value) if value is not None else None

    async def ack(self, holder: str, message_id: str) -> None:
        await self._r.lrem(self._proc(holder), 1, message_id)

    async def release(self, holder: str, model: str) -> None:
        while await self._r.lmove(self._proc(holder), self._key(model), "RIGHT", "LEFT") is not None:
            pass

    async def remove(self, model: str, message_id: str) -> None:
        await self._r.lrem(self._key(model), 0, message_id)

    async def position(self, model: str, message_id: str) -> tuple[int | None, int]:
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.lpos(self._key(model), message_id)
            pipe.llen(self._key(model))
            index, size = await pipe.execute()
        return (int(index) + 1 if index is not None else None), int(size)


class PreparedRequests(Protocol):
    """Work requests built when their messages were queued (``/v1``: all the request needs is in its
    body), so the session that pops one can send it to its worker at once and record the start beside
    it, instead of reading the conversation back first. Only a shortcut: a missing entry (another
    process's memory, an expired key) means the request is built from the database as before."""

    async def put(self, requests: list[WorkRequest], ttl_s: float) -> None: ...
    async def take(self, message_id: str) -> WorkRequest | None: ...
    async def drop(self, message_ids: list[str]) -> None: ...


class MemoryPrepared:
    """One process: a bounded dict (the oldest entries give way; a lost entry only costs a read)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._requests: dict[str, WorkRequest] = {}
        self._max = max_entries

    async def put(self, requests: list[WorkRequest], ttl_s: float) -> None:
        for request in requests:
            self._requests[request.id] = request
        while len(self._requests) > self._max:
            del self._requests[next(iter(self._requests))]

    async def take(self, message_id: str) -> WorkRequest | None:
        return self._requests.pop(message_id, None)

    async def drop(self, message_ids: list[str]) -> None:
        for message_id in message_ids:
            self._requests.pop(message_id, None)


class RedisPrepared:
    """``{prefix}wr:{message id}`` keys holding the request's JSON, expiring with the queue wait."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._r: Any = client
        self._prefix = prefix

    def _key(self, message_id: str) -> str:
        return f"{self._prefix}wr:{message_id}"

    async def put(self, requests: list[WorkRequest], ttl_s: float) -> None:
        async with self._r.pipeline(transaction=False) as pipe:
            for request in requests:
                pipe.set(self._key(request.id), request.model_dump_json(), ex=max(1, int(ttl_s)))
            await pipe.execute()

    async def take(self, message_id: str) -> WorkRequest | None:
        raw = await self._r.getdel(self._key(message_id))
        return WorkRequest.model_validate_json(raw) if raw else None

    async def drop(self, message_ids: list[str]) -> None:
        if message_ids:
            await self._r.delete(*(self._key(m) for m in message_ids))
