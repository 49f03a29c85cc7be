"""``/admin/users``: find users, and change a user's role (ban = role ``banned``), notes and leaderboard
visibility.

Who may do what: an admin may change anyone, except demote or ban themself; a moderator may only make
someone ``general`` or ``banned`` and may not touch a moderator or an admin (themself included). A backend
user with no website account (e.g. one of the Discord bot's) can only be banned or unbanned there.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated
from uuid import UUID

import anyio
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from oasst.client import BackendClient
from oasst.protocol.common import FrontEndUser
from oasst.protocol.stats import UserScore
from oasst.web.accounts import AccountStore
from oasst.web.accounts.models import Role
from oasst.web.accounts.store import AccountView
from oasst.web.deps import BackendDep, CsrfDep, ModeratorDep, StoreDep
from oasst.web.errors import forbidden, invalid, unless_missing
from oasst.web.routes.admin_common import PAGE_SIZE, done_redirect, notice
from oasst.web.templating import render

router = APIRouter()

Cursor = Annotated[str | None, Query(max_length=512)]
ALL_ROLES = (Role.general, Role.moderator, Role.admin, Role.banned)
NOTES_MAX = 4096


@dataclass(frozen=True)
class UserRow:
    """A backend user and, where there is one, their website account."""

    user: FrontEndUser
    account: AccountView | None

    @property
    def role(self) -> Role:
        """The website role; for a user without a website account, what the backend's flag means."""
        if self.account is not None:
            return self.account.role
        return Role.general if self.user.enabled else Role.banned

    @property
    def display_name(self) -> str:
        """The name the website shows (and pushes to the backend) when there is an account."""
        return self.account.display_name if self.account is not None else self.user.display_name


def assignable_roles(actor: AccountView, target: AccountView | None) -> tuple[Role, ...]:
    """The roles ``actor`` may give the user; empty when ``actor`` may not change that user at all."""
    if target is None:
        return (Role.general, Role.banned)
    if actor.is_admin:
        return (Role.admin,) if target.id == actor.id else ALL_ROLES
    if target.is_moderator:
        return ()
    return (Role.general, Role.banned)


async def _rows(store: AccountStore, users: list[FrontEndUser]) -> list[UserRow]:
    keys: list[tuple[str, str]] = [(u.auth_method, u.id) for u in users]
    accounts = await anyio.to_thread.run_sync(store.by_backend_ids, keys)
    return [UserRow(u, accounts.get((u.auth_method, u.id))) for u in users]


async def _row(backend: BackendClient, store: AccountStore, user_id: UUID) -> UserRow:
    user = await backend.get_user(user_id)
    return (await _rows(store, [user]))[0]


@router.get("/admin/users")
async def users_list(
    request: Request,
    account: ModeratorDep,
    backend: BackendDep,
    store: StoreDep,
    q: Annotated[str, Query(max_length=256)] = "",
    after: Cursor = None,
    before: Cursor = None,
) -> Response:
    """Users by display name; ``q`` keeps those whose display name contains it."""
    page = await backend.users_page(
        sort_key="display_name",
        search_text=q.strip() or None,
        after=after,
        before=before,
        max_count=PAGE_SIZE,
    )
    rows = await _rows(store, page.items)
    return render(request, "admin/users.html", section="users", page=page, rows=rows, q=q)


async def _stats(backend: BackendClient, user_id: UUID) -> dict[str, UserScore]:
    return await unless_missing(backend.user_stats(user_id), {})


@router.get("/admin/users/{user_id}")
async def user_page(
    request: Request,
    user_id: UUID,
    account: ModeratorDep,
    backend: BackendDep,
    store: StoreDep,
    after: Cursor = None,
    before: Cursor = None,
    done: str | None = None,
) -> Response:
    """One user: the moderation form, their messages (deleted ones too) and their stats."""
    row = await _row(backend, store, user_id)
    messages, stats = await asyncio.gather(
        backend.user_messages_page(
            user_id, after=after, before=before, include_deleted=True, desc=True, max_count=PAGE_SIZE
        ),
        _stats(backend, user_id),
    )
    return render(
        request,
        "admin/user.html",
        section="users",
        row=row,
        roles=assignable_roles(account, row.account),
        messages=messages,
        stats=stats,
        notice=notice(done),
    )


@router.post("/admin/users/{user_id}")
async def update_user(
    request: Request,
    user_id: UUID,
    _csrf: CsrfDep,
    account: ModeratorDep,
    backend: BackendDep,
    store: StoreDep,
    role: Annotated[str, Form()],
    display_name: Annotated[str, Form(max_length=256)],
    notes: Annotated[str, Form(max_length=NOTES_MAX)] = "",
    show_on_leaderboard: Annotated[bool, Form()] = False,
) -> Response:
    """Save the form: the backend user first (enabled = not banned), then the website account."""
    try:
        new_role = Role(role)
    except ValueError:
        raise invalid(f"Unknown role {role!r}.") from None
    name = display_name.strip()
    if not name:
        raise invalid("The display name may not be empty.")
    row = await _row(backend, store, user_id)
    allowed = assignable_roles(account, row.account)
    if not allowed:
        raise forbidden("Moderators cannot change moderators or administrators.")
    if new_role not in allowed:
        if row.account is not None and row.account.id == account.id:
            raise forbidden("You cannot change your own role.")
        if row.account is None:
            raise forbidden("This user has no website account: they can only be banned or unbanned.")
        raise forbidden("Only administrators can make moderators or administrators.")

    await backend.update_user(
        user_id,
        display_name=name,
        enabled=new_role is not Role.banned,
        notes=notes,
        show_on_leaderboard=show_on_leaderboard,
    )
    web = row.account
    if web is not None:
        if web.role is not new_role:
            await anyio.to_thread.run_sync(store.set_role, web.id, new_role)
        if web.display_name != name:
            await anyio.to_thread.run_sync(store.rename, web.id, name)

    was_banned = row.role is Role.banned or not row.user.enabled
    if new_role is Role.banned and row.role is not Role.banned:
        done = "banned"
    elif new_role is not Role.banned and was_banned:
        done = "unbanned"
    else:
        done = "saved"
    return done_redirect(f"/admin/users/{user_id}", done)
