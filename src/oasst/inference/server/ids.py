"""Time-ordered ids (UUIDv7 layout): sortable by creation, so they double as pagination cursors.

Within one process ids are strictly increasing (RFC 9562, method 1: a counter in ``rand_a`` within the
same millisecond), so messages made in one request sort in the order they were made.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_seq = 0


def new_id() -> str:
    global _last_ms, _seq
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            _seq += 1
            if _seq > 0xFFF:  # 4096 ids in one millisecond: borrow the next one
                ms, _seq = ms + 1, 0
        else:
            _seq = int.from_bytes(os.urandom(2), "big") & 0x3FF
        _last_ms = ms
        seq = _seq
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | (0x7 << 76) | seq << 64 | (0b10 << 62) | rand
    return str(uuid.UUID(int=value))
