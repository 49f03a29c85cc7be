"""Dependencies of the routes, as named ``Annotated`` aliases."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated

from fastapi import Depends, Header, Request

from oasst.inference.server.auth import bearer, check_root_token, user_from_token
from oasst.inference.server.db import Database
from oasst.inference.server.errors import ErrorCode, InferenceError
from oasst.inference.server.models import ApiKey
from oasst.inference.server.runtime import Runtime
from oasst.inference.server.settings import Settings
from oasst.inference.tokens import UserClaims


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
SettingsDep = Annotated[Settings, Depends(_settings)]
DatabaseDep = Annotated[Database, Depends(_database)]
AuthHeader = Annotated[str | None, Header(alias="Authorization", include_in_schema=False)]


def _current_user(request: Request, authorization: AuthHeader = None) -> UserClaims:
    secret: str = request.app.state.user_token_secret
    return user_from_token(secret, bearer(authorization))


async def _api_key(rt: RuntimeDep, authorization: AuthHeader = None) -> ApiKey:
    return await rt.verify_key(bearer(authorization), "api")


def _root(settings: SettingsDep, authorization: AuthHeader = None) -> None:
    token = bearer(authorization)
    if not settings.root_tokens:
        raise InferenceError(
            "No root tokens are configured (OASST_INFERENCE_ROOT_TOKENS); use `oasst inference keys`.",
            ErrorCode.ROOT_TOKEN_INVALID,
            HTTPStatus.FORBIDDEN,
        )
    check_root_token(settings.root_tokens, token)


CurrentUser = Annotated[UserClaims, Depends(_current_user)]
ApiKeyDep = Annotated[ApiKey, Depends(_api_key)]
RootDep = Annotated[None, Depends(_root)]
