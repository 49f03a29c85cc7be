"""The moderator and admin area (``/admin``): users, messages, the flagged queue, the trollboard, status
and parameters. Every page needs a moderator (admins pass too); the parameters page needs an admin.

The pages live in ``admin_users``, ``admin_messages`` and ``admin_boards``; this module joins them into
the one ``router`` the website mounts.
"""

from __future__ import annotations

from fastapi import APIRouter

from oasst.web.routes import admin_boards, admin_messages, admin_users

router = APIRouter()
router.include_router(admin_boards.router)
router.include_router(admin_users.router)
router.include_router(admin_messages.router)
