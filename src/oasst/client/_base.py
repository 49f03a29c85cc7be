"""The plumbing every client shares (:class:`ServiceClient`: the connection, one ``_request`` that maps
failures to :class:`~oasst.client.errors.OasstApiError`, ``_parse`` into wire models), the backend's
authentication (:class:`BackendBase`), and the spelling of path segments and query values.
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


class ServiceClient:
    """One connection to one oasst service: the pool, one ``_request`` that maps transport failures and
    error answers to :class:`~oasst.client.errors.OasstApiError`, and reading answers into wire models.
    ``BackendClient`` and ``InferenceClient`` add their authentication and their endpoints."""

    SERVICE = "the service"  # how messages name the server ("Could not reach the backend")

    def __init__(
        self,
        base_url: str = "",
        *,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        if http is not None and transport is not None:
            raise ValueError("pass either http or transport, not both")
        self.base_url = base_url.rstrip("/")
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(transport=transport, timeout=timeout)

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

    async def _request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """Send one request; a failure to connect, a timeout or an error answer raises ``OasstApiError``."""
        try:
            response = await self._http.request(method, url, json=json, params=params, headers=headers)
        except httpx.TimeoutException as exc:
            raise OasstConnectionError(f"{method} {url} timed out: {exc}") from exc
        except httpx.TransportError as exc:
            where = self.base_url or self.SERVICE
            raise OasstConnectionError(f"Could not reach {where}: {exc or type(exc).__name__}") from exc
        if response.is_error:
            raise _error_from_response(response)
        return response

    def _json(self, response: httpx.Response) -> Any:
        """The answer's JSON body; ``None`` for 204 or an empty body."""
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise self._unexpected(response.status_code, "JSON", response.text) from exc

    def _parse(self, model: type[BaseModel] | TypeAdapter[Any], data: Any, what: str) -> Any:
        try:
            if isinstance(model, TypeAdapter):
                return model.validate_python(data)
            return model.model_validate(data)
        except ValidationError as exc:
            raise self._unexpected(200, what, data, str(exc)) from exc

    def _unexpected(self, status: int, what: str, data: Any, detail: str = "") -> OasstApiError:
        shown = repr(data)
        if len(shown) > 200:
            shown = shown[:200] + "..."
        message = f"Unexpected answer from {self.SERVICE}: expected {what}, got {shown}"
        if detail:
            message += f" ({detail.splitlines()[0]})"
        return OasstApiError(status, ApiErrorCode.GENERIC_ERROR, message)


class BackendBase(ServiceClient):
    """A connection to one backend, authenticated with one API key (see ``BackendClient``)."""

    SERVICE = "the backend"

    def __init__(
        self,
        base_url: str = "",
        api_key: str | None = None,
        *,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(
            base_url.rstrip("/").removesuffix(API_PREFIX), http=http, transport=transport, timeout=timeout
        )
        self._api_key = api_key
        self._prefix = self.base_url + API_PREFIX

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
        response = await self._request(method, url, headers=all_headers, json=json, params=params)
        return self._json(response)


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
