"""Mounts every resource router under ``/api/v1``."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI, Request

from oasst.backend.api import (
    admin,
    frontend_messages,
    frontend_users,
    leaderboards,
    messages,
    stats,
    synthetic,
    tasks,
    text_labels,
    trollboards,
    users,
)


async def forget_workers_after_change(request: Request) -> AsyncIterator[None]:
    """User and admin changes (bans, ToS, merges) apply to task calls of this process at once."""
    yield
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        request.app.state.task_caches.clear()


USER_CHANGES = [Depends(forget_workers_after_change)]

PREFIX = "/api/v1"
# (router, path, tags, extra dependencies)
ROUTES = [
    (tasks.router, "/tasks", ["tasks"], []),
    (text_labels.router, "/text_labels", ["text_labels"], []),
    (synthetic.router, "/messages", ["messages"], []),  # before messages: a fixed path, not an id
    (messages.router, "/messages", ["messages"], []),
    (frontend_messages.router, "/frontend_messages", ["frontend_messages"], []),
    (users.router, "/users", ["users"], USER_CHANGES),
    (frontend_users.router, "/frontend_users", ["frontend_users"], USER_CHANGES),
    (leaderboards.router, "/leaderboards", ["leaderboards"], []),
    (trollboards.router, "/trollboards", ["trollboards"], []),
    (stats.router, "/stats", ["stats"], []),
    (admin.router, "/admin", ["admin"], USER_CHANGES),
]


def mount_api(app: FastAPI) -> None:
    """Mount every resource router directly on the app (one level: route matching stays cheap)."""
    for router, path, tags, dependencies in ROUTES:
        app.include_router(router, prefix=PREFIX + path, tags=list(tags), dependencies=dependencies)
