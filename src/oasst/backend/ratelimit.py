"""The backend's rate limits (the limiters live in :mod:`oasst.ratelimit`, shared with the inference
server): an exceeded limit is a 429 ``TOO_MANY_REQUESTS`` with ``Retry-After``."""

from __future__ import annotations

from http import HTTPStatus

from oasst.backend.errors import ErrorCode, OasstError
from oasst.ratelimit import Limit, RateLimiter

__all__ = ["enforce"]


def enforce(limiter: RateLimiter, key: str, limit: Limit, what: str) -> None:
    """Raise 429 ``TOO_MANY_REQUESTS`` when ``key`` went over ``limit``."""
    wait = limiter.hit(key, limit)
    if wait:
        raise OasstError(
            f"Too many {what}: at most {limit.requests} per {limit.interval_sec} s. Retry in {wait} s.",
            ErrorCode.TOO_MANY_REQUESTS,
            HTTPStatus.TOO_MANY_REQUESTS,
            retry_after=wait,
        )
