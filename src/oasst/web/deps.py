"""Request dependencies of the website, as named ``Annotated`` aliases.

``AccountDep`` is the usual one: a signed-in, not banned person who accepted the current terms.
``SignedInDep`` skips the terms check (the terms page itself), ``ModeratorDep``/``AdminDep`` add roles.
Every POST route also takes ``CsrfDep``.
"""

from __future__ import annotations

import secrets
from http import HTTPStatus
from typing import Annotated
from uuid import UUID

import anyio
from fastapi import Depends, Request

from oasst.client import BackendClient
from oasst.protocol.common import CreateFrontendUserRequest, User
from oasst.web.accounts import AccountStore
from oasst.web.accounts.store import AccountView
from oasst.web.errors import SignInRequired, TermsRequired, WebError, WebErrorCode, forbidden
from oasst.web.i18n import gettext as _
from oasst.web.settings import WebSettings


def get_settings(request: Request) -> WebSettings:
    settings: WebSettings = request.app.state.settings
    return settings


def get_store(request: Request) -> AccountStore:
    store: AccountStore = request.app.state.accounts
    return store


def get_backend(request: Request) -> BackendClient:
    backend: BackendClient = request.app.state.backend
    return backend


SettingsDep = Annotated[WebSettings, Depends(get_settings)]
StoreDep = Annotated[AccountStore, Depends(get_store)]
BackendDep = Annotated[BackendClient, Depends(get_backend)]


async def optional_account(request: Request) -> AccountView | None:
    """The signed-in person, or ``None``. A cookie from before a sign-out-everywhere or ban is void."""
    if hasattr(request.state, "account"):
        cached: AccountView | None = request.state.account
        return cached
    account: AccountView | None = None
    account_id = request.session.get("aid")
    if account_id:
        store = get_store(request)
        account = await anyio.to_thread.run_sync(store.get, account_id)
        if account is None or account.session_epoch != request.session.get("ep"):
            request.session.pop("aid", None)
            account = None
    request.state.account = account
    return account


def _next_url(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


async def signed_in(
    request: Request, account: Annotated[AccountView | None, Depends(optional_account)]
) -> AccountView:
    if account is None:
        raise SignInRequired(_next_url(request))
    if account.role == "banned":
        raise WebError(
            HTTPStatus.FORBIDDEN,
            WebErrorCode.BANNED,
            _("Your account is banned."),
            _("If you think this is a mistake, contact the moderators."),
        )
    return account


SignedInDep = Annotated[AccountView, Depends(signed_in)]


async def terms_accepted(request: Request, account: SignedInDep, settings: SettingsDep) -> AccountView:
    if account.tos_version < settings.tos_version:
        raise TermsRequired(_next_url(request))
    return account


AccountDep = Annotated[AccountView, Depends(terms_accepted)]


async def moderator(account: AccountDep) -> AccountView:
    if not account.is_moderator:
        raise forbidden(_("This page is for moderators."))
    return account


async def admin(account: AccountDep) -> AccountView:
    if not account.is_admin:
        raise forbidden(_("This page is for administrators."))
    return account


ModeratorDep = Annotated[AccountView, Depends(moderator)]
AdminDep = Annotated[AccountView, Depends(admin)]


async def verify_csrf(request: Request) -> None:
    """Form posts carry ``csrf_token``; script posts the ``X-CSRF-Token`` header. Both must match."""
    expected = request.session.get("csrf")
    sent = request.headers.get("x-csrf-token")
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get("csrf_token")
        sent = value if isinstance(value, str) else None
    if not expected or not sent or not secrets.compare_digest(str(expected), sent):
        raise WebError(
            HTTPStatus.FORBIDDEN,
            WebErrorCode.CSRF_FAILED,
            _("This form has expired or did not come from this site."),
            _("Reload the page and try again."),
        )


CsrfDep = Annotated[None, Depends(verify_csrf)]


def backend_user(account: AccountView) -> User:
    """The person as the backend's protocol names them."""
    who = account.backend
    return User.model_validate(
        {"id": who.id, "display_name": who.display_name, "auth_method": who.auth_method}
    )


async def backend_user_id(request: Request, account: AccountView) -> UUID:
    """The backend's id of this person (registered with the backend on first need, then remembered)."""
    cached = request.session.get("buid")
    if cached and request.session.get("buid_for") == account.id:
        return UUID(cached)
    user = backend_user(account)
    registered = await get_backend(request).upsert_frontend_user(
        CreateFrontendUserRequest(**user.model_dump())
    )
    request.session["buid"] = str(registered.user_id)
    request.session["buid_for"] = account.id
    return registered.user_id


def task_lang(request: Request) -> str:
    """The language of tasks, which is also the UI language."""
    from oasst.web.i18n import current_lang

    return current_lang.get()
