"""The plumbing every part of :class:`~oasst.client.backend.BackendClient` shares: the connection, one
``_call`` that sends a request and maps failures to :class:`~oasst.client.errors.OasstApiError`, one
``_parse`` that reads an answer into a wire model, and the spelling of path segments and query values.
"""

from __future__ import annotations

import enum
from datetime import datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote
from uuid import UUID

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from oasst.client.errors import ApiErrorCode, OasstApiError, OasstConnectionError
from oasst.protocol.common import User

API_PREFIX = "/api/v1"


def user_header(user: User | None) -> dict[str, str]:
    """The ``x-oasst-user`` header that tells read endpoints who is looking (``<auth_method>:<id>``)."""
    return {"x-oasst-user": f"{user.auth_method}:{user.id}"} if user is not None else {}


def root_header(root_token: str) -> dict[str, str]:
    """The ``Authorization`` header of the root-token routes (``/admin/api_client…``)."""
    return {"Authorization": f"Bearer {root_token}"}


class BackendBase:
    """A connection to one backend, authenticated with one API key (see ``BackendClient``)."""

    def __init__(
        self,
        base_url: str = "",
        api_key: str | None = None,
        *,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        if http is not None and transport is not None:
            raise ValueError("pass either http or transport, not both")
        root = base_url.rstrip("/").removesuffix(API_PREFIX)
        self.base_url = root
        self._api_key = api_key
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(transport=transport, timeout=timeout)
        self._prefix = root + API_PREFIX

    # -- lifecycle -------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection pool (only if this client created it)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- plumbing --------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        authenticate: bool = True,
        absolute: bool = False,
    ) -> Any:
        url = (self.base_url if absolute else self._prefix) + path
        all_headers = dict(headers or {})
        if authenticate and self._api_key is not None:
            all_headers["X-API-Key"] = self._api_key
        try:
            response = await self._http.request(method, url, json=json, params=params, headers=all_headers)
        except httpx.TimeoutException as exc:
            raise OasstConnectionError(f"{method} {url} timed out: {exc}") from exc
        except httpx.TransportError as exc:
            where = self.base_url or "the backend"
            raise OasstConnectionError(f"Could not reach {where}: {exc or type(exc).__name__}") from exc
        if response.is_error:
            raise _error_from_response(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise unexpected(response.status_code, "JSON", response.text) from exc

    @staticmethod
    def _parse(model: type[BaseModel] | TypeAdapter[Any], data: Any, what: str) -> Any:
        try:
            if isinstance(model, TypeAdapter):
                return model.validate_python(data)
            return model.model_validate(data)
        except ValidationError as exc:
            raise unexpected(200, what, data, str(exc)) from exc


def dump(model: BaseModel) -> Any:
    return model.model_dump(mode="json")


def flag(value: bool) -> str:
    return "true" if value else "false"


def segment(value: object) -> str:
    """A path segment, escaped: frontend ids and usernames may hold ``#``, ``?`` or spaces."""
    return quote(str(value), safe="")


def query(**values: Any) -> dict[str, Any] | None:
    """Query parameters in their wire spelling; ``None`` values are left out (the route's default holds)."""
    params = {name: _query_value(value) for name, value in values.items() if value is not None}
    return params or None


def _query_value(value: Any) -> Any:
    if isinstance(value, bool):
        return flag(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, UUID):
        return str(value)
    return value


def unexpected(status: int, what: str, data: Any, detail: str = "") -> OasstApiError:
    shown = repr(data)
    if len(shown) > 200:
        shown = shown[:200] + "..."
    message = f"Unexpected answer from the backend: expected {what}, got {shown}"
    if detail:
        message += f" ({detail.splitlines()[0]})"
    return OasstApiError(status, ApiErrorCode.GENERIC_ERROR, message)


def _error_from_response(response: httpx.Response) -> OasstApiError:
    """Map an error answer (ideally ``{"message", "error_code"}``) to ``OasstApiError``."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error_code" in body:
        try:
            code = int(body["error_code"])
        except (TypeError, ValueError):
            code = ApiErrorCode.GENERIC_ERROR
        return OasstApiError(status, code, str(body.get("message") or response.reason_phrase))
    if isinstance(body, dict) and "detail" in body:  # a plain FastAPI/Starlette error
        return OasstApiError(status, _code_for_status(status), str(body["detail"]))
    text = response.text.strip()[:200] or response.reason_phrase
    return OasstApiError(status, _code_for_status(status), text)


def _code_for_status(status: int) -> int:
    return {
        403: ApiErrorCode.API_CLIENT_NOT_AUTHORIZED,
        404: ApiErrorCode.NOT_FOUND,
        429: ApiErrorCode.TOO_MANY_REQUESTS,
    }.get(status, ApiErrorCode.GENERIC_ERROR)
