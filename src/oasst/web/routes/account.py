"""Your account: display name, your stats in every time frame, how you sign in, and deleting it all."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated
from uuid import UUID

import anyio
from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from oasst.client import BackendClient, OasstApiError
from oasst.protocol.common import CreateFrontendUserRequest
from oasst.protocol.stats import UserScore
from oasst.web.accounts.store import AccountView
from oasst.web.deps import AccountDep, BackendDep, CsrfDep, StoreDep, backend_user, backend_user_id
from oasst.web.errors import unless_missing
from oasst.web.i18n import gettext as _
from oasst.web.routes.leaderboard import time_frame_names
from oasst.web.templating import render

router = APIRouter()

MAX_NAME_CHARS = 64
CONFIRM_WORD = "DELETE"
PROVIDER_NAMES = {"discord": "Discord", "github": "GitHub", "google": "Google"}


def display_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a display name, or ``None``: not empty, no leading space, at most 64 chars."""
    if not name.strip():
        return _("Please enter a name.")
    if name[0].isspace():
        return _("The name cannot start with a space.")
    if len(name) > MAX_NAME_CHARS:
        return _("The name can be at most %(n)d characters long.") % {"n": MAX_NAME_CHARS}
    return None


def sign_in_name(provider: str) -> str:
    if provider == "email":
        return _("E-mail link")
    return PROVIDER_NAMES.get(provider) or _("Development login")


@router.get("/account")
async def account_page(request: Request, account: AccountDep, backend: BackendDep) -> Response:
    return await _account_page(request, account, backend)


async def _account_page(
    request: Request,
    account: AccountView,
    backend: BackendClient,
    *,
    name_error: str | None = None,
    name_value: str | None = None,
    renamed: bool = False,
) -> Response:
    user_id = await backend_user_id(request, account)
    stats = await _stats(backend, user_id)
    return render(
        request,
        "account/index.html",
        status_code=HTTPStatus.UNPROCESSABLE_ENTITY if name_error else HTTPStatus.OK,
        frames=time_frame_names(),
        stats=stats,
        has_stats=any(s.rank is not None or s.leader_score for s in stats.values()),
        sign_ins=[
            PROVIDER_NAMES.get(provider, _("Development login")) for provider, _s in account.identities
        ],
        name_error=name_error,
        name_value=account.display_name if name_value is None else name_value,
        max_name=MAX_NAME_CHARS,
        renamed=renamed or request.query_params.get("renamed") == "1",
    )


async def _stats(backend: BackendClient, user_id: UUID) -> dict[str, UserScore]:
    return await unless_missing(backend.user_stats(user_id), {})


@router.post("/account/name")
async def rename(
    request: Request,
    _csrf: CsrfDep,
    account: AccountDep,
    backend: BackendDep,
    store: StoreDep,
    display_name: Annotated[str, Form()] = "",
) -> Response:
    """Change the display name here and in the backend (leaderboards show the backend's)."""
    display_name = display_name.rstrip()
    problem = display_name_problem(display_name)
    if problem is not None:
        return await _account_page(request, account, backend, name_error=problem, name_value=display_name)
    await anyio.to_thread.run_sync(store.rename, account.id, display_name)
    who = backend_user(account)
    await backend.upsert_frontend_user(
        CreateFrontendUserRequest(id=who.id, display_name=display_name, auth_method=who.auth_method)
    )
    return RedirectResponse("/account?renamed=1", status_code=HTTPStatus.SEE_OTHER)


@router.get("/account/delete")
async def delete_page(request: Request, account: AccountDep) -> Response:
    return render(request, "account/delete.html", confirm_word=CONFIRM_WORD, error=None)


@router.post("/account/delete")
async def delete_account(
    request: Request,
    _csrf: CsrfDep,
    account: AccountDep,
    backend: BackendDep,
    store: StoreDep,
    confirm: Annotated[str, Form()] = "",
) -> Response:
    """Anonymise the person in the backend (their contributions stay, without a name), then remove the
    website account and end the session. Signing in again later makes a new, empty account."""
    if confirm.strip() != CONFIRM_WORD:
        error = _("Type %(word)s to confirm.") % {"word": CONFIRM_WORD}
        return render(
            request,
            "account/delete.html",
            status_code=HTTPStatus.UNPROCESSABLE_ENTITY,
            confirm_word=CONFIRM_WORD,
            error=error,
        )
    user_id = await backend_user_id(request, account)
    try:
        await backend.delete_user(user_id)
    except OasstApiError as exc:
        if exc.status != HTTPStatus.NOT_FOUND:  # already gone is fine
            raise
    await anyio.to_thread.run_sync(store.delete, account.id)
    lang = request.session.get("lang")
    request.session.clear()
    if lang:
        request.session["lang"] = lang
    return RedirectResponse("/account/deleted", status_code=HTTPStatus.SEE_OTHER)


@router.get("/account/deleted")
async def deleted_page(request: Request) -> Response:
    """The notice after a deletion (no sign-in needed: the account is gone)."""
    return render(request, "account/deleted.html")
