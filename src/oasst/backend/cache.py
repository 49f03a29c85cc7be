"""A tiny thread-safe in-process cache with a time to live.

Used for values that every request needs and that change rarely (API key -> client, frontend user ->
user row). Each server process has its own; a change made through one process clears that process's
cache at once and reaches the others within the time to live.
"""

from __future__ import annotations

import threading
import time
from typing import Any


class TtlCache:
    def __init__(self, ttl_sec: float = 10.0, max_items: int = 50_000) -> None:
        self._ttl = ttl_sec
        self._max_items = max_items
        self._items: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            hit = self._items.get(key)
            if hit is None or time.monotonic() - hit[0] > self._ttl:
                return None
            return hit[1]

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            if len(self._items) >= self._max_items:
                self._items.clear()
            self._items[key] = (time.monotonic(), value)

    def pop(self, key: Any) -> None:
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
