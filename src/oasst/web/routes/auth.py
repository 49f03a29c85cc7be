"""Signing in and out: e-mail magic links, OAuth (Discord, GitHub, Google) and the development login."""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Annotated, Any
from urllib.parse import urlsplit

import anyio
from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from oasst.web.accounts import Role
from oasst.web.accounts.store import AccountView
from oasst.web.deps import CsrfDep, SettingsDep, StoreDep, optional_account
from oasst.web.errors import WebError, WebErrorCode, invalid
from oasst.web.i18n import gettext as _
from oasst.web.settings import WebSettings
from oasst.web.templating import render

router = APIRouter()
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
PROVIDERS: dict[str, dict[str, Any]] = {
    "discord": {
        "authorize_url": "https://discord.com/api/oauth2/authorize",
        "access_token_url": "https://discord.com/api/oauth2/token",
        "api_base_url": "https://discord.com/api/",
        "client_kwargs": {"scope": "identify email"},
        "userinfo": "users/@me",
    },
    "github": {
        "authorize_url": "https://github.com/login/oauth/authorize",
        "access_token_url": "https://github.com/login/oauth/access_token",
        "api_base_url": "https://api.github.com/",
        "client_kwargs": {"scope": "read:user user:email"},
        "userinfo": "user",
    },
    "google": {
        "server_metadata_url": "https://accounts.google.com/.well-known/openid-configuration",
        "client_kwargs": {"scope": "openid email profile"},
        "userinfo": None,
    },
}


def safe_next(url: str | None) -> str:
    """Only same-site paths: a sign-in link must never redirect to another site."""
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return "/dashboard"
    parts = urlsplit(url)
    return url if not parts.scheme and not parts.netloc else "/dashboard"


def enabled_providers(settings: WebSettings) -> list[str]:
    o = settings.oauth
    pairs = {
        "discord": (o.discord_client_id, o.discord_client_secret),
        "github": (o.github_client_id, o.github_client_secret),
        "google": (o.google_client_id, o.google_client_secret),
    }
    return [name for name, (cid, secret) in pairs.items() if cid and secret]


def start_session(request: Request, account: AccountView) -> None:
    """Sign ``account`` in: a fresh session (new CSRF token) that keeps only the language choice."""
    lang = request.session.get("lang")
    request.session.clear()
    request.session.update({"aid": account.id, "ep": account.session_epoch})
    if lang:
        request.session["lang"] = lang


def initial_role(settings: WebSettings, email: str | None) -> Role:
    if email and email.lower() in {e.lower() for e in settings.admin_emails}:
        return Role.admin
    return Role.general


@router.get("/signin")
async def signin_page(request: Request, settings: SettingsDep, next: str | None = None) -> Response:
    if await optional_account(request) is not None:
        return RedirectResponse(safe_next(next), status_code=HTTPStatus.SEE_OTHER)
    return render(
        request,
        "signin.html",
        next=safe_next(next),
        providers=enabled_providers(settings),
        roles=[r.value for r in Role if r is not Role.banned],
    )


@router.post("/signin/email")
async def signin_email(
    request: Request,
    _csrf: CsrfDep,
    settings: SettingsDep,
    store: StoreDep,
    email: Annotated[str, Form(max_length=320)],
    next: Annotated[str, Form()] = "/dashboard",
) -> Response:
    if not settings.email_login:
        raise WebError(HTTPStatus.NOT_FOUND, WebErrorCode.PROVIDER_DISABLED, "E-mail sign-in is turned off.")
    email = email.strip().lower()
    if not EMAIL.match(email):
        raise invalid(_("Please enter a valid e-mail address."))
    raw = await anyio.to_thread.run_sync(
        store.create_login_token, email, safe_next(next), settings.magic_link_minutes
    )
    link = f"{settings.base_url.rstrip('/')}/signin/verify?token={raw}"
    body = _("Open this link to sign in to oasst (valid for %(minutes)d minutes):") % {
        "minutes": settings.magic_link_minutes
    }
    await request.app.state.mailer.send(email, _("Your oasst sign-in link"), f"{body}\n\n{link}\n")
    return render(request, "signin_sent.html", email=email)


@router.get("/signin/verify")
async def signin_verify(
    request: Request, settings: SettingsDep, store: StoreDep, token: str = ""
) -> Response:
    redeemed = await anyio.to_thread.run_sync(store.redeem_login_token, token) if token else None
    if redeemed is None:
        raise WebError(
            HTTPStatus.BAD_REQUEST,
            WebErrorCode.LINK_INVALID,
            _("This sign-in link is invalid, expired or already used."),
            _("Ask for a new link on the sign-in page."),
        )
    email, next_url = redeemed
    account = await anyio.to_thread.run_sync(
        lambda: store.sign_in(
            "email", email, display_name=email.split("@")[0], email=email, role=initial_role(settings, email)
        )
    )
    start_session(request, account)
    return RedirectResponse(safe_next(next_url), status_code=HTTPStatus.SEE_OTHER)


@router.post("/signin/dev")
async def signin_dev(
    request: Request,
    _csrf: CsrfDep,
    settings: SettingsDep,
    store: StoreDep,
    username: Annotated[str, Form(min_length=1, max_length=64)],
    role: Annotated[Role, Form()] = Role.general,
    next: Annotated[str, Form()] = "/dashboard",
) -> Response:
    """Development login: any name, any role. Off unless ``OASST_WEB_DEV_LOGIN=true`` (never in production)."""
    if not settings.dev_login:
        raise WebError(HTTPStatus.NOT_FOUND, WebErrorCode.PROVIDER_DISABLED, "The development login is off.")
    username = username.strip()
    if not username:
        raise invalid(_("Please enter a name."))
    account = await anyio.to_thread.run_sync(
        lambda: store.sign_in("dev", username, display_name=username, role=role)
    )
    start_session(request, account)
    return RedirectResponse(safe_next(next), status_code=HTTPStatus.SEE_OTHER)


def _oauth_client(request: Request, provider: str) -> Any:
    settings: WebSettings = request.app.state.settings
    if provider not in enabled_providers(settings):
        raise WebError(
            HTTPStatus.NOT_FOUND, WebErrorCode.PROVIDER_DISABLED, f"Sign-in with {provider} is off."
        )
    registry = getattr(request.app.state, "oauth", None)
    if registry is None:
        from authlib.integrations.starlette_client import OAuth

        registry = OAuth()
        for name in enabled_providers(settings):
            config = {k: v for k, v in PROVIDERS[name].items() if k != "userinfo"}
            secret = getattr(settings.oauth, f"{name}_client_secret")
            registry.register(
                name,
                client_id=getattr(settings.oauth, f"{name}_client_id"),
                client_secret=secret.get_secret_value(),
                **config,
            )
        request.app.state.oauth = registry
    return registry.create_client(provider)


@router.get("/signin/oauth/{provider}")
async def oauth_start(
    request: Request, settings: SettingsDep, provider: str, next: str | None = None
) -> Response:
    client = _oauth_client(request, provider)
    request.session["oauth_next"] = safe_next(next)
    redirect_uri = f"{settings.base_url.rstrip('/')}/signin/oauth/{provider}/callback"
    response: Response = await client.authorize_redirect(request, redirect_uri)
    return response


@router.get("/signin/oauth/{provider}/callback")
async def oauth_callback(request: Request, settings: SettingsDep, store: StoreDep, provider: str) -> Response:
    from authlib.integrations.base_client import OAuthError

    client = _oauth_client(request, provider)
    try:
        token = await client.authorize_access_token(request)
        subject, name, email = await _oauth_profile(client, provider, token)
    except (OAuthError, KeyError, ValueError) as exc:
        raise WebError(
            HTTPStatus.BAD_REQUEST, WebErrorCode.OAUTH_FAILED, f"Sign-in with {provider} failed: {exc}"
        ) from exc
    account = await anyio.to_thread.run_sync(
        lambda: store.sign_in(
            provider, subject, display_name=name, email=email, role=initial_role(settings, email)
        )
    )
    next_url = request.session.pop("oauth_next", "/dashboard")
    start_session(request, account)
    return RedirectResponse(safe_next(next_url), status_code=HTTPStatus.SEE_OTHER)


async def _oauth_profile(client: Any, provider: str, token: dict[str, Any]) -> tuple[str, str, str | None]:
    """``(subject, display name, verified e-mail or None)`` from the provider's user info."""
    if provider == "google":
        info = token.get("userinfo") or await client.userinfo(token=token)
        email = info.get("email") if info.get("email_verified") else None
        return str(info["sub"]), str(info.get("name") or info.get("email") or "google user"), email
    response = await client.get(PROVIDERS[provider]["userinfo"], token=token)
    info = response.json()
    if provider == "discord":
        email = info.get("email") if info.get("verified") else None
        return str(info["id"]), str(info.get("global_name") or info["username"]), email
    # github: the profile's public e-mail is not verified; only link accounts by verified mails
    return str(info["id"]), str(info.get("name") or info["login"]), None


@router.post("/signout")
async def signout(
    request: Request, _csrf: CsrfDep, store: StoreDep, everywhere: Annotated[bool, Form()] = False
) -> Response:
    account = await optional_account(request)
    if account is not None and everywhere:
        await anyio.to_thread.run_sync(store.sign_out_everywhere, account.id)
    lang = request.session.get("lang")
    request.session.clear()
    if lang:
        request.session["lang"] = lang
    return RedirectResponse("/", status_code=HTTPStatus.SEE_OTHER)
