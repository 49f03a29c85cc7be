"""Named dependencies shared by every router."""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from starlette.concurrency import run_in_threadpool

from oasst.backend.db import Database
from oasst.backend.errors import ErrorCode, OasstError
from oasst.backend.models import ApiClient
from oasst.backend.services import clients as clients_service
from oasst.backend.services.clients import TaskCaches
from oasst.backend.settings import Settings
from oasst.ratelimit import RateLimiter


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def get_rate_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


async def get_task_caches(request: Request) -> TaskCaches:
    cache: TaskCaches = request.app.state.task_caches
    return cache


SettingsDep = Annotated[Settings, Depends(get_settings)]
TaskCachesDep = Annotated[TaskCaches, Depends(get_task_caches)]
DatabaseDep = Annotated[Database, Depends(get_database)]
RateLimiterDep = Annotated[RateLimiter, Depends(get_rate_limiter)]


async def get_api_key(
    x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None,
    api_key: Annotated[str | None, Query(include_in_schema=False)] = None,
) -> str | None:
    return x_api_key or api_key


async def get_api_client(request: Request, key: Annotated[str | None, Depends(get_api_key)]) -> ApiClient:
    # Dependencies are async so they run on the event loop: a sync one costs a thread hop per request.
    # The database comes from app.state, not DatabaseDep: one dependency less to resolve per request.
    cache = request.app.state.api_client_cache
    client = cache.get(key) if key else None
    if client is None:
        database: Database = request.app.state.database
        client = await run_in_threadpool(
            database.read, lambda s: clients_service.authorize_api_client(s, key)
        )
        cache.put(key, client)
    assert isinstance(client, ApiClient)
    return client


async def get_trusted_api_client(client: Annotated[ApiClient, Depends(get_api_client)]) -> ApiClient:
    return clients_service.require_trusted(client)


async def get_root_token(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> str:
    token = (authorization or "").removeprefix("Bearer ").strip()
    allowed = {t.get_secret_value() for t in settings.root_tokens}
    if not token or token not in allowed:
        raise OasstError(
            "A root token is required: send 'Authorization: Bearer <token>' with a token from OASST_ROOT_TOKENS.",
            ErrorCode.ROOT_TOKEN_NOT_AUTHORIZED,
            HTTPStatus.FORBIDDEN,
        )
    return token


async def get_frontend_user_header(
    x_oasst_user: Annotated[str | None, Header(alias="x-oasst-user")] = None,
    oasst_user: Annotated[str | None, Query(include_in_schema=False)] = None,
) -> tuple[str, str] | None:
    """The reading user, as ``<auth_method>:<username>`` (only enriches responses)."""
    value = x_oasst_user or oasst_user
    if not value:
        return None
    auth_method, sep, username = value.partition(":")
    if not sep or not username:
        raise OasstError(
            "x-oasst-user must look like '<auth_method>:<username>'.", ErrorCode.AUTH_AND_USERNAME_REQUIRED
        )
    return auth_method, username


@dataclass(frozen=True, slots=True)
class TaskServices:
    """What the task endpoints use, resolved as one dependency: those endpoints are the hot path,
    and resolving a dependency costs FastAPI more than reading any of these from app.state."""

    settings: Settings
    database: Database
    limiter: RateLimiter
    caches: TaskCaches


async def get_task_services(request: Request) -> TaskServices:
    state = request.app.state
    return TaskServices(state.settings, state.database, state.rate_limiter, state.task_caches)


ApiClientDep = Annotated[ApiClient, Depends(get_api_client)]
TaskServicesDep = Annotated[TaskServices, Depends(get_task_services)]
TrustedClientDep = Annotated[ApiClient, Depends(get_trusted_api_client)]
RootTokenDep = Annotated[str, Depends(get_root_token)]
FrontendUserDep = Annotated[tuple[str, str] | None, Depends(get_frontend_user_header)]
