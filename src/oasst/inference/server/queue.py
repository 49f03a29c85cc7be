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
