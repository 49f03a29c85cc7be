"""The backend application: ``create_app(settings)`` builds it; nothing happens at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from oasst import __version__
from oasst.backend.cache import TtlCache
from oasst.backend.db import Database, make_engine
from oasst.backend.errors import ErrorCode, OasstError, error_for_conflict
from oasst.backend.guards import RequestGuard
from oasst.backend.migrate import upgrade
from oasst.backend.services.clients import TaskCaches
from oasst.backend.settings import Settings
from oasst.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter

log = logging.getLogger("oasst.backend")


def make_rate_limiter(settings: Settings) -> RateLimiter:
    if settings.redis_url:
        limiter = RedisRateLimiter(settings.redis_url)
        limiter.ping()
        return limiter
    return MemoryRateLimiter()


def create_app(settings: Settings, *, database: Database | None = None, migrate: bool = True) -> FastAPI:
    """Build the backend. ``database`` may be injected (tests); otherwise it is made from settings."""
    db = database or Database(make_engine(settings), max_retries=settings.db_max_tx_retries)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from oasst.backend.startup import on_startup

        # Fewer threads than concurrent requests: every thread switch costs GIL hand-offs, and more
        # threads than database connections only queue inside the pool.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.request_threads
        if migrate:
            upgrade(db.engine)
        stop = on_startup(app)
        try:
            yield
        finally:
            stop()
            if database is None:
                db.dispose()

    app = FastAPI(
        title="oasst backend",
        version=__version__,
        description="Open Assistant compatible data-collection API.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/docs",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.database = db
    app.state.rate_limiter = make_rate_limiter(settings)
    app.state.api_client_cache = TtlCache()
    app.state.task_caches = TaskCaches(lottery_sec=settings.prompt_lottery_interval_sec)
    _install_error_handlers(app)
    app.add_middleware(RequestGuard)

    from oasst.backend.api.router import mount_api

    mount_api(app)

    @app.get("/health", tags=["health"])
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    return app


def _error(status: int, code: ErrorCode | int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"message": message, "error_code": int(code), **extra})


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OasstError)
    async def _oasst_error(_: Request, exc: OasstError) -> JSONResponse:
        response = _error(exc.http_status, exc.error_code, exc.message)
        if exc.retry_after is not None:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(IntegrityError)
    async def _conflict(_: Request, exc: IntegrityError) -> JSONResponse:
        diag = getattr(getattr(exc, "orig", None), "diag", None)
        error = error_for_conflict(getattr(diag, "constraint_name", None) or str(exc.orig))
        return _error(error.http_status, error.error_code, error.message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"Invalid request: {where}: {first.get('msg', 'validation failed')}"
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors]
        return _error(
            HTTPStatus.UNPROCESSABLE_ENTITY, ErrorCode.REQUEST_VALIDATION_FAILED, message, detail=detail
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}.get(
            exc.status_code, ErrorCode.GENERIC_ERROR
        )
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return _error(HTTPStatus.INTERNAL_SERVER_ERROR, ErrorCode.SERVER_ERROR0, "Internal server error.")


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory``: settings come from the ``OASST_*`` environment."""
    from oasst.backend.settings import load_settings

    return create_app(load_settings())
