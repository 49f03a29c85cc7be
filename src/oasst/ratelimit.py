"""Fixed-window rate limits: on Redis in production (shared by every replica), in memory when embedded.

Shared by the backend (task requests) and the inference server (assistant replies); each turns an
exceeded limit into its own 429 error.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Limit", "MemoryRateLimiter", "RateLimiter", "RedisRateLimiter"]


@dataclass(frozen=True)
class Limit:
    requests: int
    interval_sec: int


class RateLimiter(Protocol):
    def hit(self, key: str, limit: Limit, cost: int = 1) -> int:
        """Count ``cost`` requests under ``key``; return seconds to wait if over the limit, else 0."""
        ...

    def exhausted(self, key: str, limit: Limit) -> bool:
        """Whether the next request under ``key`` would go over the limit (counts nothing)."""
        ...

    def reset(self) -> None: ...


class MemoryRateLimiter:
    """In-process limiter for the embedded single-process mode."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, limit: Limit, cost: int = 1) -> int:
        now = time.monotonic()
        with self._lock:
            start, count = self._windows.get(key, (now, 0))
            if now - start >= limit.interval_sec:
                start, count = now, 0
            count += cost
            self._windows[key] = (start, count)
            if len(self._windows) > 100_000:
                self._evict(now, limit.interval_sec)
            if count > limit.requests:
                return max(1, int(limit.interval_sec - (now - start)) + 1)
            return 0

    def exhausted(self, key: str, limit: Limit) -> bool:
        with self._lock:
            start, count = self._windows.get(key, (0.0, 0))
            return time.monotonic() - start < limit.interval_sec and count >= limit.requests

    def _evict(self, now: float, horizon: int) -> None:
        for key in [k for k, (start, _) in self._windows.items() if now - start >= horizon]:
            del self._windows[key]

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()


class RedisRateLimiter:
    """Counters in Redis with ``INCRBY`` + ``PEXPIRE NX``, so every server replica shares one budget."""

    def __init__(self, url: str, prefix: str = "oasst:rl:") -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._prefix = prefix

    def hit(self, key: str, limit: Limit, cost: int = 1) -> int:
        full_key = f"{self._prefix}{limit.interval_sec}:{key}"
        pipe = self._redis.pipeline()
        pipe.incrby(full_key, cost)
        pipe.pexpire(full_key, limit.interval_sec * 1000, nx=True)
        pipe.pttl(full_key)
        count, _, ttl_ms = pipe.execute()
        if int(count) > limit.requests:
            return max(1, (int(ttl_ms) + 999) // 1000)
        return 0

    def exhausted(self, key: str, limit: Limit) -> bool:
        value = self._redis.get(f"{self._prefix}{limit.interval_sec}:{key}")
        return value is not None and int(value) >= limit.requests  # type: ignore[arg-type,unused-ignore]

    def reset(self) -> None:
        for key in self._redis.scan_iter(f"{self._prefix}*"):
            self._redis.delete(key)

    def ping(self) -> None:
        self._redis.ping()
