"""``BackendClient``: the typed async client of the backend's ``/api/v1`` API.

One client serves the website, the bot, the CLI and the benchmarks. It talks to a server over the
network (``BackendClient("http://host:8080", api_key)``) or, in the embedded single-process mode, to an
in-process ASGI app through an injected transport::

    transport = httpx.ASGITransport(app=backend_app)
    async with BackendClient("http://backend", api_key, transport=transport) as backend:
        task = await backend.request_task(user)

Request and response bodies are the wire models of :mod:`oasst.protocol`; every failure is raised as
:class:`~oasst.client.errors.OasstApiError`.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self
from uuid import UUID

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from oasst.client.errors import ApiErrorCode, OasstApiError, OasstConnectionError
from oasst.protocol.admin import CreateApiClientRequest
from oasst.protocol.common import (
    CreateFrontendUserRequest,
    FrontEndUser,
    Message,
    MessageTree,
    MessageTreeStateResponse,
    User,
)
from oasst.protocol.stats import LeaderboardStats, TimeFrame
from oasst.protocol.tasks import (
    AnyTask,
    MessageRanking,
    MessageRating,
    TaskAck,
    TaskDone,
    TaskNAck,
    TaskRequest,
    TaskRequestType,
    TextLabels,
    TextReplyToMessage,
)

API_PREFIX = "/api/v1"

Interaction = TextReplyToMessage | MessageRanking | TextLabels | MessageRating

_TASK_ADAPTER: TypeAdapter[AnyTask] = TypeAdapter(AnyTask)
_COUNTS_ADAPTER: TypeAdapter[dict[str, int]] = TypeAdapter(dict[str, int])


def user_header(user: User | None) -> dict[str, str]:
    """The ``x-oasst-user`` header that tells read endpoints who is looking (``<auth_method>:<id>``)."""
    return {"x-oasst-user": f"{user.auth_method}:{user.id}"} if user is not None else {}


class BackendClient:
    """Async client of one backend, authenticated with one API key.

    ``base_url`` is the server's root (``http://127.0.0.1:8080``; a trailing ``/api/v1`` is accepted).
    Pass ``http`` to reuse an ``httpx.AsyncClient`` you own (it is not closed by this client), or
    ``transport`` (e.g. ``httpx.ASGITransport(app=app)``) to reach an in-process app.
    """

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

    # -- the task protocol -----------------------------------------------------------------------

    async def request_task(
        self,
        user: User | None,
        type: TaskRequestType | str = TaskRequestType.random,
        lang: str | None = "en",
        *,
        collective: bool = False,
    ) -> AnyTask:
        """``POST /tasks/``: the next task for ``user`` (of ``type``, or any with ``random``)."""
        body = TaskRequest(type=TaskRequestType(type), user=user, collective=collective, lang=lang)
        data = await self._call("POST", "/tasks/", json=_dump(body))
        return self._parse(_TASK_ADAPTER, data, "task")

    async def ack_task(self, task_id: UUID | str, frontend_message_id: str) -> None:
        """``POST /tasks/{id}/ack``: accept the task, binding it to the frontend's own message id."""
        await self._call("POST", f"/tasks/{task_id}/ack", json=_dump(TaskAck(message_id=frontend_message_id)))

    async def nack_task(self, task_id: UUID | str, reason: str | None = None) -> None:
        """``POST /tasks/{id}/nack``: skip the task (no ack is needed first)."""
        await self._call("POST", f"/tasks/{task_id}/nack", json=_dump(TaskNAck(reason=reason)))

    async def post_interaction(self, interaction: Interaction) -> TaskDone:
        """``POST /tasks/interaction``: submit a reply, ranking or labels for an acked task."""
        data = await self._call("POST", "/tasks/interaction", json=_dump(interaction))
        return self._parse(TaskDone, data, "task_done")

    async def availability(self, user: User | None, lang: str | None = "en") -> dict[str, int]:
        """``POST /tasks/availability``: how many tasks of each type ``user`` could get now."""
        params = {"lang": lang} if lang else None
        body = _dump(user) if user is not None else None
        data = await self._call("POST", "/tasks/availability", json=body, params=params)
        return self._parse(_COUNTS_ADAPTER, data, "task availability")

    # -- users -----------------------------------------------------------------------------------

    async def upsert_frontend_user(self, request: CreateFrontendUserRequest) -> FrontEndUser:
        """``POST /frontend_users/``: create or update an end user (changing fields needs a trusted key)."""
        data = await self._call("POST", "/frontend_users/", json=_dump(request))
        return self._parse(FrontEndUser, data, "frontend user")

    async def get_frontend_user(self, auth_method: str, username: str) -> FrontEndUser:
        """``GET /frontend_users/{auth_method}/{username}``."""
        data = await self._call("GET", f"/frontend_users/{auth_method}/{username}")
        return self._parse(FrontEndUser, data, "frontend user")

    # -- messages and trees ----------------------------------------------------------------------

    async def get_message(self, message_id: UUID | str, *, as_user: User | None = None) -> Message:
        """``GET /messages/{id}``."""
        data = await self._call("GET", f"/messages/{message_id}", headers=user_header(as_user))
        return self._parse(Message, data, "message")

    async def get_frontend_message(self, frontend_message_id: str, *, as_user: User | None = None) -> Message:
        """``GET /frontend_messages/{id}``: a message by the id this frontend gave it (its ack id)."""
        data = await self._call(
            "GET", f"/frontend_messages/{frontend_message_id}", headers=user_header(as_user)
        )
        return self._parse(Message, data, "message")

    async def get_tree(
        self,
        message_id: UUID | str,
        *,
        include_spam: bool = True,
        include_deleted: bool = False,
        as_user: User | None = None,
    ) -> MessageTree:
        """``GET /messages/{id}/tree``: the whole tree that holds the message."""
        params = {"include_spam": _flag(include_spam), "include_deleted": _flag(include_deleted)}
        data = await self._call(
            "GET", f"/messages/{message_id}/tree", params=params, headers=user_header(as_user)
        )
        return self._parse(MessageTree, data, "message tree")

    async def get_tree_state(self, message_id: UUID | str) -> MessageTreeStateResponse:
        """``GET /messages/{id}/tree/state``: the lifecycle state of the message's tree."""
        data = await self._call("GET", f"/messages/{message_id}/tree/state")
        return self._parse(MessageTreeStateResponse, data, "tree state")

    # -- leaderboards, stats, admin --------------------------------------------------------------

    async def leaderboard(
        self,
        time_frame: TimeFrame | str = TimeFrame.day,
        *,
        max_count: int | None = None,
        as_user: User | None = None,
    ) -> LeaderboardStats:
        """``GET /leaderboards/{day|week|month|total}`` (``as_user`` is highlighted)."""
        params = {"max_count": max_count} if max_count is not None else None
        frame = TimeFrame(time_frame).value
        data = await self._call("GET", f"/leaderboards/{frame}", params=params, headers=user_header(as_user))
        return self._parse(LeaderboardStats, data, "leaderboard")

    async def tree_state_counts(self) -> dict[str, int]:
        """``GET /stats/tree_manager/state_counts`` (trusted): number of trees in each lifecycle state."""
        data = await self._call("GET", "/stats/tree_manager/state_counts")
        if isinstance(data, dict) and isinstance(data.get("state_counts"), dict):
            data = data["state_counts"]
        return self._parse(_COUNTS_ADAPTER, data, "state counts")

    async def create_api_client(
        self,
        root_token: str,
        description: str,
        trusted: bool = False,
        *,
        frontend_type: str | None = None,
        admin_email: str | None = None,
    ) -> str:
        """``POST /admin/api_client`` with a root token: mint a new API key and return it."""
        body = CreateApiClientRequest(
            description=description,
            frontend_type=frontend_type or "other",
            trusted=trusted,
            admin_email=admin_email,
        )
        data = await self._call(
            "POST",
            "/admin/api_client",
            json=_dump(body),
            headers={"Authorization": f"Bearer {root_token}"},
            authenticate=False,
        )
        if isinstance(data, dict) and isinstance(data.get("api_key"), str):
            data = data["api_key"]
        if not isinstance(data, str) or not data:
            raise _unexpected(200, "API key", data)
        return data

    async def health(self) -> dict[str, Any]:
        """``GET /health`` (outside ``/api/v1``): liveness and version."""
        data = await self._call("GET", "/health", absolute=True, authenticate=False)
        if not isinstance(data, dict):
            raise _unexpected(200, "health", data)
        return data

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
            raise _unexpected(response.status_code, "JSON", response.text) from exc

    @staticmethod
    def _parse(model: type[BaseModel] | TypeAdapter[Any], data: Any, what: str) -> Any:
        try:
            if isinstance(model, TypeAdapter):
                return model.validate_python(data)
            return model.model_validate(data)
        except ValidationError as exc:
            raise _unexpected(200, what, data, str(exc)) from exc


def _dump(model: BaseModel) -> Any:
    return model.model_dump(mode="json")


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _unexpected(status: int, what: str, data: Any, detail: str = "") -> OasstApiError:
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
