"""Connected worker sessions: which models are served, and which sessions have gone silent.

A session is refreshed by the process holding its websocket while the worker keeps talking. A session
not refreshed for ``heartbeat_timeout_s`` is dead, whether its worker froze or the server process holding
it died; the sweeper of any process then recovers its work.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

import redis.asyncio as aioredis

SessionInfo = dict[str, Any]  # model, max_parallel, context_length, engine, key_id


class Registry(Protocol):
    async def register(self, session_id: str, info: SessionInfo) -> None: ...
    async def touch(self, session_id: str) -> None: ...
    async def remove(self, session_id: str) -> None: ...
    async def sessions(self, *, alive_within: float) -> tuple[dict[str, SessionInfo], dict[str, SessionInfo]]:
        """(live, dead) sessions."""
        ...


class MemoryRegistry:
    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._info: dict[str, SessionInfo] = {}

    async def register(self, session_id: str, info: SessionInfo) -> None:
        self._info[session_id] = info
        self._seen[session_id] = time.time()

    async def touch(self, session_id: str) -> None:
        if session_id in self._seen:
            self._seen[session_id] = time.time()

    async def remove(self, session_id: str) -> None:
        self._seen.pop(session_id, None)
        self._info.pop(session_id, None)

    async def sessions(self, *, alive_within: float) -> tuple[dict[str, SessionInfo], dict[str, SessionInfo]]:
        cutoff = time.time() - alive_within
        live = {s: self._info[s] for s, t in self._seen.items() if t >= cutoff}
        dead = {s: self._info[s] for s, t in self._seen.items() if t < cutoff}
        return live, dead


class RedisRegistry:
    """A sorted set ``{prefix}sessions`` (score: last seen) and a hash ``{prefix}session_info``."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._r: Any = client  # redis-py's command typing is too loose to be useful here
        self._seen = f"{prefix}sessions"
        self._info = f"{prefix}session_info"

    async def register(self, session_id: str, info: SessionInfo) -> None:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(self._info, session_id, json.dumps(info))
            pipe.zadd(self._seen, {session_id: time.time()})
            await pipe.execute()

    async def touch(self, session_id: str) -> None:
        await self._r.zadd(self._seen, {session_id: time.time()}, xx=True)

    async def remove(self, session_id: str) -> None:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.zrem(self._seen, session_id)
            pipe.hdel(self._info, session_id)
            await pipe.execute()

    async def sessions(self, *, alive_within: float) -> tuple[dict[str, SessionInfo], dict[str, SessionInfo]]:
        scores = await self._r.zrange(self._seen, 0, -1, withscores=True)
        if not scores:
            return {}, {}
        infos = await self._r.hmget(self._info, [s for s, _ in scores])
        cutoff = time.time() - alive_within
        live: dict[str, SessionInfo] = {}
        dead: dict[str, SessionInfo] = {}
        for (sid, seen), raw in zip(scores, infos, strict=True):
            info = json.loads(raw) if raw else {}
            (live if seen >= cutoff else dead)[str(sid)] = info
        return live, dead
