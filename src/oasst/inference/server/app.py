"""The inference server application: ``create_app(settings)`` builds it; nothing happens at import time."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from oasst import __version__
from oasst.inference.server.db import Database, make_engine
from oasst.inference.server.errors import ErrorCode, InferenceError
from oasst.inference.server.migrate import upgrade
from oasst.inference.server.runtime import Runtime
from oasst.inference.server.settings import Settings

log = logging.getLogger("oasst.inference")

# OpenAI's error "type" per HTTP status, for the /v1 routes
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    422: "invalid_request_error",
    503: "server_error",
}


def create_app(settings: Settings, *, database: Database | None = None, migrate: bool = True) -> FastAPI:
    """Build the server. ``database`` may be injected (tests); otherwise it is made from settings."""
    db = database or Database(make_engine(settings))
    runtime = Runtime(settings, db)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if migrate:
            upgrade(db.engine)
        await runtime.start()
        try:
            yield
        finally:
            await runtime.close()
            if database is None:
                db.dispose()

    app = FastAPI(
        title="oasst inference",
        version=__version__,
        description="Chats with message trees, an OpenAI-compatible /v1 API, and the worker gateway.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.database = db
    app.state.runtime = runtime
    secret = settings.user_token_secret.get_secret_value() if settings.user_token_secret else ""
    if not secret:
        log.warning("OASST_INFERENCE_USER_TOKEN_SECRET is unset: using a random one (no website can sign in)")
        secret = secrets.token_urlsafe(32)
    app.state.user_token_secret = secret
    _install_error_handlers(app)

    from oasst.inference.server.api import admin, chats, messages, models, openai, workers

    for module in (chats, messages, models, admin, workers, openai):
        app.include_router(module.router)

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__, **runtime.describe()}

    return app


def _error(request: Request, status: int, code: ErrorCode, message: str, **extra: Any) -> JSONResponse:
    if request.url.path.startswith("/v1/"):
        kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        body: dict[str, Any] = {
            "error": {"message": message, "type": kind, "param": None, "code": code.name.lower()}
        }
    else:
        body = {"message": message, "error_code": int(code), **extra}
    return JSONResponse(status_code=status, content=body)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InferenceError)
    async def _domain(request: Request, exc: InferenceError) -> JSONResponse:
        response = _error(request, exc.http_status, exc.error_code, exc.message)
        if exc.retry_after is not None:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"Invalid request: {where}: {first.get('msg', 'validation failed')}"
        status = (
            HTTPStatus.BAD_REQUEST if request.url.path.startswith("/v1/") else HTTPStatus.UNPROCESSABLE_ENTITY
        )
        return _error(request, status, ErrorCode.REQUEST_VALIDATION_FAILED, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}.get(
            exc.status_code, ErrorCode.GENERIC_ERROR
        )
        return _error(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return _error(
            request, HTTPStatus.INTERNAL_SERVER_ERROR, ErrorCode.SERVER_ERROR, "Internal server error."
        )


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory``: settings from the ``OASST_INFERENCE_*`` environment."""
    from oasst.inference.server.settings import load_settings

    return create_app(load_settings())
