"""Mounts every resource router under ``/api/v1``."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request

from oasst.backend.api import (
    admin,
    frontend_messages,
    frontend_users,
    leaderboards,
    messages,
    stats,
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

api_router = APIRouter()
api_router.include_router(tasks.router, prefix="/tasks", tags=["tasks"])
api_router.include_router(text_labels.router, prefix="/text_labels", tags=["text_labels"])
api_router.include_router(messages.router, prefix="/messages", tags=["messages"])
api_router.include_router(frontend_messages.router, prefix="/frontend_messages", tags=["frontend_messages"])
api_router.include_router(users.router, prefix="/users", tags=["users"], dependencies=USER_CHANGES)
api_router.include_router(
    frontend_users.router, prefix="/frontend_users", tags=["frontend_users"], dependencies=USER_CHANGES
)
api_router.include_router(leaderboards.router, prefix="/leaderboards", tags=["leaderboards"])
api_router.include_router(trollboards.router, prefix="/trollboards", tags=["trollboards"])
api_router.include_router(stats.router, prefix="/stats", tags=["stats"])
api_router.include_router(admin.router, prefix="/admin", tags=["admin"], dependencies=USER_CHANGES)
