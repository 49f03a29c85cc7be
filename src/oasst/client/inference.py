"""``InferenceClient``: the typed async client of the inference server's chat API (``/chats``, ``/models``).

Every chat call acts for one person, named by a signed user token (``oasst.inference.tokens``) passed
per call as ``as_user``; the website mints one per request::

    async with InferenceClient("http://127.0.0.1:8085") as chat:
        token = mint_user_token(secret, "local:42", "Alice", ttl=300)
        created = await chat.create_chat(CreateChat(system_prompt="Be brief."), as_user=token)
        question = await chat.post_user_message(created.id, "Hi!", as_user=token)
        [reply] = await chat.request_assistant_messages(created.id, question.id, as_user=token)
        async for event in chat.stream_events(created.id, reply.id, as_user=token):
            ...  # PendingStreamEvent, TokenStreamEvent..., then MessageStreamEvent or ErrorStreamEvent

Failures raise :class:`~oasst.client.errors.OasstApiError` with the server's ``error_code`` (the numbers
of :class:`InferenceErrorCode`), or :class:`~oasst.client.errors.OasstConnectionError`.

An in-process server is reached through a transport. ``httpx.ASGITransport`` buffers a whole response,
so an event stream would arrive only when the reply is complete; :class:`StreamingASGITransport` passes
each chunk on as the app sends it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from oasst.client._base import ServiceClient, _error_from_response, query, segment
from oasst.client.errors import OasstConnectionError
from oasst.inference.protocol import (
    AssistantMessages,
    ChatPage,
    ChatRead,
    ChatWithMessages,
    CreateAssistantMessage,
    CreateChat,
    CreateReport,
    CreateUserMessage,
    DraftPick,
    MessageRead,
    ModelInfo,
    ReportType,
    SamplingParameters,
    StreamEvent,
    UpdateChat,
    Vote,
)

__all__ = ["ExportedChat", "InferenceClient", "InferenceErrorCode", "StreamingASGITransport"]

log = logging.getLogger("oasst.client")

_EVENT: TypeAdapter[StreamEvent] = TypeAdapter(StreamEvent)
_MODELS: TypeAdapter[list[ModelInfo]] = TypeAdapter(list[ModelInfo])
_MESSAGES: TypeAdapter[list[MessageRead]] = TypeAdapter(list[MessageRead])


class InferenceErrorCode(IntEnum):
    """Inference server error codes that callers branch on (``oasst.inference.server.errors``)."""

    TOKEN_INVALID = 601
    TOKEN_EXPIRED = 602
    CHAT_NOT_FOUND = 8000
    MESSAGE_NOT_FOUND = 8001
    INVALID_PARENT = 8002
    MESSAGE_TOO_LONG = 8003
    CHAT_TOO_LONG = 8004
    NOT_AN_ASSISTANT_MESSAGE = 8005
    MESSAGE_NOT_FINISHED = 8006
    NOT_A_DRAFT = 8007
    MODEL_UNKNOWN = 8100
    PRESET_UNKNOWN = 8101
    QUEUE_FULL = 8102
    TOO_MANY_DRAFTS = 8103
    TOO_MANY_REPLIES = 8106


@dataclass(frozen=True)
class ExportedChat:
    """A chat export as the server sends it: the file's text, its media type and suggested name."""

    content: str
    media_type: str
    filename: str


class InferenceClient(ServiceClient):
    """Async client of one inference server. ``base_url`` is its root (``http://host:8085``).

    Pass ``http`` to reuse an ``httpx.AsyncClient`` you own (it is not closed here), or ``transport`` to
    reach an in-process app (see :class:`StreamingASGITransport`).
    """

    SERVICE = "the inference server"

    # -- chats -----------------------------------------------------------------------------------

    async def list_chats(
        self,
        *,
        as_user: str,
        include_hidden: bool = False,
        limit: int = 20,
        cursor: str | None = None,
        q: str | None = None,
    ) -> ChatPage:
        """``GET /chats``: the user's chats, newest first; ``cursor`` is ``next`` of the previous page."""
        params = query(include_hidden=include_hidden, limit=limit, cursor=cursor, q=q or None)
        data = await self._call("GET", "/chats", as_user=as_user, params=params)
        return self._parse(ChatPage, data, "chat page")

    async def search_chats(
        self, q: str, *, as_user: str, limit: int = 20, cursor: str | None = None
    ) -> ChatPage:
        """Chats whose title or messages contain ``q`` (case-insensitive), hidden ones included."""
        return await self.list_chats(as_user=as_user, include_hidden=True, limit=limit, cursor=cursor, q=q)

    async def create_chat(self, body: CreateChat | None = None, *, as_user: str) -> ChatRead:
        """``POST /chats``: a new empty chat (system prompt, custom instructions, data-use choice)."""
        data = await self._call("POST", "/chats", as_user=as_user, json=_dump(body or CreateChat()))
        return self._parse(ChatRead, data, "chat")

    async def get_chat(self, chat_id: str, *, as_user: str) -> ChatWithMessages:
        """``GET /chats/{id}``: the chat with every message of its tree (oldest first)."""
        data = await self._call("GET", f"/chats/{segment(chat_id)}", as_user=as_user)
        return self._parse(ChatWithMessages, data, "chat")

    async def update_chat(self, chat_id: str, changes: UpdateChat, *, as_user: str) -> ChatRead:
        """``PATCH /chats/{id}``: only the fields set on ``changes`` change (title, hidden, data use ...)."""
        body = changes.model_dump(mode="json", exclude_unset=True)
        data = await self._call("PATCH", f"/chats/{segment(chat_id)}", as_user=as_user, json=body)
        return self._parse(ChatRead, data, "chat")

    async def delete_chat(self, chat_id: str, *, as_user: str) -> None:
        """``DELETE /chats/{id}``: erase the chat's texts for good."""
        await self._call("DELETE", f"/chats/{segment(chat_id)}", as_user=as_user)

    async def hide_all_chats(self, *, as_user: str) -> None:
        """``POST /chats/hide-all``."""
        await self._call("POST", "/chats/hide-all", as_user=as_user)

    async def export_chat(
        self, chat_id: str, format: Literal["md", "json"] = "json", *, as_user: str
    ) -> ExportedChat:
        """``GET /chats/{id}/export``: the whole tree as Markdown or JSON, ready to offer as a download."""
        response = await self._send(
            "GET", f"/chats/{segment(chat_id)}/export", as_user=as_user, params={"format": format}
        )
        media_type = response.headers.get("content-type", "").split(";")[0] or "application/octet-stream"
        return ExportedChat(response.text, media_type, _filename(response) or f"chat-{chat_id}.{format}")

    # -- messages --------------------------------------------------------------------------------

    async def post_user_message(
        self, chat_id: str, content: str, parent_id: str | None = None, *, as_user: str
    ) -> MessageRead:
        """``POST /chats/{id}/messages``: ``parent_id`` None starts the chat; an existing user message's
        parent again is an edit (a sibling branch)."""
        body = _dump(CreateUserMessage(parent_id=parent_id, content=content))
        data = await self._call("POST", f"/chats/{segment(chat_id)}/messages", as_user=as_user, json=body)
        return self._parse(MessageRead, data, "message")

    async def request_assistant_messages(
        self,
        chat_id: str,
        parent_id: str,
        *,
        as_user: str,
        model: str | None = None,
        preset: str | None = None,
        sampling: SamplingParameters | None = None,
        drafts: int = 1,
    ) -> list[MessageRead]:
        """``POST /chats/{id}/assistant-messages``: ``drafts`` pending replies to a user message (asking
        again for the same parent regenerates). ``sampling`` overrides the model's ``preset``."""
        body = CreateAssistantMessage(
            parent_id=parent_id, model=model, preset=preset, sampling=sampling, drafts=drafts
        )
        path = f"/chats/{segment(chat_id)}/assistant-messages"
        data = await self._call("POST", path, as_user=as_user, json=_dump(body))
        return self._parse(AssistantMessages, data, "assistant messages").messages

    async def get_message(self, chat_id: str, message_id: str, *, as_user: str) -> MessageRead:
        path = f"/chats/{segment(chat_id)}/messages/{segment(message_id)}"
        return self._parse(MessageRead, await self._call("GET", path, as_user=as_user), "message")

    async def stream_events(
        self, chat_id: str, message_id: str, *, as_user: str
    ) -> AsyncIterator[StreamEvent]:
        """``GET .../messages/{id}/events``: the assistant message's events as they happen, ending with
        the final ``message`` or ``error`` event (a finished message yields its final event at once)."""
        path = f"/chats/{segment(chat_id)}/messages/{segment(message_id)}/events"
        url = self.base_url + path
        headers = {**_auth(as_user), "Accept": "text/event-stream"}
        timeout = httpx.Timeout(self._http.timeout.connect, read=None)
        try:
            async with self._http.stream("GET", url, headers=headers, timeout=timeout) as response:
                if response.is_error:
                    await response.aread()
                    raise _error_from_response(response)
                async for data in _sse_data(response.aiter_lines()):
                    try:
                        yield _EVENT.validate_json(data)
                    except ValidationError as exc:
                        raise self._unexpected(200, "stream event", data, str(exc)) from exc
        except httpx.TimeoutException as exc:
            raise OasstConnectionError(f"GET {url} timed out: {exc}") from exc
        except httpx.TransportError as exc:
            where = self.base_url or self.SERVICE
            raise OasstConnectionError(f"Could not reach {where}: {exc or type(exc).__name__}") from exc

    async def stop_message(self, chat_id: str, message_id: str, *, as_user: str) -> MessageRead:
        """``POST .../messages/{id}/stop``: stop generating, keeping the text so far (``cancelled``)."""
        path = f"/chats/{segment(chat_id)}/messages/{segment(message_id)}/stop"
        return self._parse(MessageRead, await self._call("POST", path, as_user=as_user), "message")

    async def vote(
        self, chat_id: str, message_id: str, score: Literal[-1, 0, 1], *, as_user: str
    ) -> MessageRead:
        """``PUT .../messages/{id}/vote``: 👍 (1), 👎 (-1) or no vote (0) on an assistant message."""
        path = f"/chats/{segment(chat_id)}/messages/{segment(message_id)}/vote"
        data = await self._call("PUT", path, as_user=as_user, json=_dump(Vote(score=score)))
        return self._parse(MessageRead, data, "message")

    async def report(
        self, chat_id: str, message_id: str, report_type: ReportType | str, reason: str = "", *, as_user: str
    ) -> int:
        """``POST .../messages/{id}/reports``: report an assistant message; the new report's id."""
        body = CreateReport(report_type=ReportType(report_type), reason=reason)
        path = f"/chats/{segment(chat_id)}/messages/{segment(message_id)}/reports"
        data = await self._call("POST", path, as_user=as_user, json=_dump(body))
        if not isinstance(data, dict) or not isinstance(data.get("id"), int):
            raise self._unexpected(201, "report id", data)
        return int(data["id"])

    async def pick_draft(self, chat_id: str, selected_id: str, *, as_user: str) -> list[MessageRead]:
        """``POST /chats/{id}/draft-picks``: the user chose this draft; the group's others were not chosen."""
        path = f"/chats/{segment(chat_id)}/draft-picks"
        data = await self._call("POST", path, as_user=as_user, json=_dump(DraftPick(selected_id=selected_id)))
        return self._parse(_MESSAGES, data, "draft group")

    # -- models ----------------------------------------------------------------------------------

    async def list_models(self, *, as_user: str) -> list[ModelInfo]:
        """``GET /models``: the models a user can chat with, with their sampling presets."""
        return self._parse(_MODELS, await self._call("GET", "/models", as_user=as_user), "models")

    # -- plumbing --------------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        as_user: str,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        return await self._request(
            method, self.base_url + path, headers=_auth(as_user), json=json, params=params
        )

    async def _call(
        self,
        method: str,
        path: str,
        *,
        as_user: str,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        return self._json(await self._send(method, path, as_user=as_user, json=json, params=params))


def _auth(token: str) -> dict[str, str]:
    if not token:
        raise ValueError("as_user must be a user token (oasst.inference.tokens.mint_user_token)")
    return {"Authorization": f"Bearer {token}"}


def _dump(model: BaseModel) -> Any:
    return model.model_dump(mode="json")


def _filename(response: httpx.Response) -> str | None:
    disposition = response.headers.get("content-disposition", "")
    for part in disposition.split(";"):
        name, _, value = part.strip().partition("=")
        if name.lower() == "filename" and value:
            return value.strip('"')
    return None


async def _sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined with newlines; comments skipped)."""
    buffer: list[str] = []
    async for line in lines:
        if not line:
            if buffer:
                yield "\n".join(buffer)
                buffer = []
        elif line.startswith("data:"):
            value = line[5:]
            buffer.append(value[1:] if value.startswith(" ") else value)
    if buffer:
        yield "\n".join(buffer)


class StreamingASGITransport(httpx.AsyncBaseTransport):
    """Like ``httpx.ASGITransport``, but the response body streams: each chunk the app sends is handed on
    as it comes, so server-sent events of an in-process app arrive live. Closing the response (the reader
    went away) tells the app the client disconnected and cancels it, as a dropped connection would."""

    def __init__(self, app: Any, *, root_path: str = "") -> None:
        self.app = app
        self.root_path = root_path

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "server": (request.url.host, request.url.port),
            "client": ("127.0.0.1", 123),
            "root_path": self.root_path,
        }
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        started = asyncio.Event()
        disconnected = asyncio.Event()
        head: dict[str, Any] = {"status": 500, "headers": []}
        request_sent = False

        async def receive() -> dict[str, Any]:
            nonlocal request_sent
            if not request_sent:
                request_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                head.update(status=message["status"], headers=message.get("headers", []))
                started.set()
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    chunks.put_nowait(message["body"])
                if not message.get("more_body", False):
                    chunks.put_nowait(None)

        async def run_app() -> None:
            try:
                await self.app(scope, receive, send)
            except Exception:
                log.exception("the in-process app failed on %s %s", request.method, request.url.path)
            finally:
                started.set()
                chunks.put_nowait(None)

        task = asyncio.create_task(run_app())
        await started.wait()
        stream = _AppBodyStream(task, chunks, disconnected)
        return httpx.Response(head["status"], headers=head["headers"], stream=stream)


class _AppBodyStream(httpx.AsyncByteStream):
    def __init__(
        self, task: asyncio.Task[None], chunks: asyncio.Queue[bytes | None], disconnected: asyncio.Event
    ) -> None:
        self._task = task
        self._chunks = chunks
        self._disconnected = disconnected

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self._chunks.get()) is not None:
            yield chunk

    async def aclose(self) -> None:
        self._disconnected.set()
        if not self._task.done():
            self._task.cancel()
        await asyncio.wait([self._task])
