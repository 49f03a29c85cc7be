"""``create_app(settings)``: the website, a server-rendered FastAPI app over the backend's HTTP API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oasst import __version__
from oasst.client import BackendClient, InferenceClient, OasstApiError, OasstConnectionError
from oasst.web import i18n
from oasst.web.accounts import AccountStore
from oasst.web.accounts.store import make_account_engine
from oasst.web.errors import SignInRequired, TermsRequired, WebError, WebErrorCode
from oasst.web.i18n import gettext as _
from oasst.web.mailer import Mailer, make_mailer
from oasst.web.settings import WebSettings
from oasst.web.templating import make_environment, render

log = logging.getLogger("oasst.web")
STATIC_DIR = Path(__file__).parent / "static"
SESSION_COOKIE = "oasst_session"
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def create_app(
    settings: WebSettings,
    *,
    backend_transport: httpx.AsyncBaseTransport | None = None,
    inference_transport: httpx.AsyncBaseTransport | None = None,
    mailer: Mailer | None = None,
    migrate: bool = True,
) -> FastAPI:
    """Build the website. ``backend_transport`` reaches an in-process backend (``oasst up``, tests);
    ``inference_transport`` an in-process inference server (use ``oasst.client.StreamingASGITransport``)."""
    store = AccountStore(make_account_engine(settings.database_url))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if migrate:
            await anyio.to_thread.run_sync(store.migrate)
        backend = BackendClient(
            settings.backend_url,
            settings.backend_api_key.get_secret_value() or None,
            transport=backend_transport,
        )
        app.state.backend = backend
        inference = None
        if settings.inference_url:
            inference = InferenceClient(settings.inference_url, transport=inference_transport)
        app.state.inference = inference
        try:
            yield
        finally:
            await backend.aclose()
            if inference is not None:
                await inference.aclose()
            store.engine.dispose()

    app = FastAPI(
        title="oasst website", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan
    )
    app.state.settings = settings
    app.state.accounts = store
    app.state.mailer = mailer or make_mailer(settings.smtp)
    app.state.templates = make_environment()
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _install_error_handlers(app)
    app.add_middleware(LanguageMiddleware, settings=settings)
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_key.get_secret_value(),
        session_cookie=SESSION_COOKIE,
        max_age=settings.session_days * 86400,
        same_site="lax",
        https_only=settings.secure_cookies,
    )
    app.add_middleware(SecurityHeaders)

    from oasst.web.routes import mount_routes

    mount_routes(app)
    return app


class LanguageMiddleware:
    """Sets the request's language: the session's choice, else the browser's, else the default."""

    def __init__(self, app: ASGIApp, settings: WebSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lang = scope.get("session", {}).get("lang")
        if lang not in self.settings.languages:
            lang = self._from_header(scope)
        token = i18n.current_lang.set(lang)
        try:
            await self.app(scope, receive, send)
        finally:
            i18n.current_lang.reset(token)

    def _from_header(self, scope: Scope) -> str:
        for name, value in scope.get("headers", []):
            if name == b"accept-language":
                for part in value.decode("latin-1").split(","):
                    code = part.split(";")[0].strip().lower()
                    for candidate in (code, code.split("-")[0]):
                        if candidate in self.settings.languages:
                            return candidate
        return self.settings.default_lang


class SecurityHeaders:
    """A strict Content-Security-Policy (no inline script at all) and the usual hardening headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"x-frame-options", b"DENY"),
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def error_response(request: Request, error: WebError) -> Response:
    if _wants_json(request):
        return JSONResponse({"error_code": error.code, "message": error.message}, status_code=error.status)
    return render(request, "error.html", status_code=error.status, error=error)


def _install_error_handlers(app: FastAPI) -> None:
    async def on_web_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, WebError)
        if isinstance(exc, SignInRequired) and request.method == "GET" and not _wants_json(request):
            return RedirectResponse(f"/signin?next={quote(exc.next_url)}", status_code=HTTPStatus.SEE_OTHER)
        return error_response(request, exc)

    async def on_terms(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TermsRequired)
        if request.method == "GET" and not _wants_json(request):
            return RedirectResponse(f"/tos?next={quote(exc.next_url)}", status_code=HTTPStatus.SEE_OTHER)
        error = WebError(
            HTTPStatus.FORBIDDEN, WebErrorCode.FORBIDDEN, _("Please accept the terms of service first.")
        )
        return error_response(request, error)

    async def on_backend_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, OasstApiError)
        status = exc.status if 400 <= exc.status < 600 else HTTPStatus.BAD_GATEWAY
        return error_response(request, WebError(status, f"backend_{int(exc.error_code)}", exc.message))

    async def on_backend_down(request: Request, exc: Exception) -> Response:
        log.error("backend unreachable: %s", exc)
        error = WebError(
            HTTPStatus.SERVICE_UNAVAILABLE,
            WebErrorCode.BACKEND_UNAVAILABLE,
            _("The data service is not reachable right now."),
            _("Try again in a minute."),
        )
        return error_response(request, error)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = WebErrorCode.NOT_FOUND if exc.status_code == 404 else f"http_{exc.status_code}"
        message = _("This page does not exist.") if exc.status_code == 404 else str(exc.detail)
        return error_response(request, WebError(exc.status_code, code, message))

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        message = f"Invalid {where}: {first.get('msg', 'invalid value')}"
        return error_response(
            request, WebError(HTTPStatus.UNPROCESSABLE_ENTITY, WebErrorCode.INVALID_INPUT, message)
        )

    app.add_exception_handler(WebError, on_web_error)
    app.add_exception_handler(TermsRequired, on_terms)
    app.add_exception_handler(OasstConnectionError, on_backend_down)
    app.add_exception_handler(OasstApiError, on_backend_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation)


def create_app_from_env() -> FastAPI:
    from oasst.web.settings import load_web_settings

    return create_app(load_web_settings())
