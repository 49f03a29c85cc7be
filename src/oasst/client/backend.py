"""``BackendClient``: the typed async client of the backend's ``/api/v1`` API.

One client serves the website, the bot, the CLI and the benchmarks. It talks to a server over the
network (``BackendClient("http://host:8080", api_key)``) or, in the embedded single-process mode, to an
in-process ASGI app through an injected transport::

    transport = httpx.ASGITransport(app=backend_app)
    async with BackendClient("http://backend", api_key, transport=transport) as backend:
        task = await backend.request_task(user)

Request and response bodies are the wire models of :mod:`oasst.protocol`; every failure is raised as
:class:`~oasst.client.errors.OasstApiError`. The methods are grouped by resource in small modules
(``_messages``, ``_users``, ``_admin``); this one holds the task protocol and puts them together.
"""

from __future__ import annotations

from uuid import UUID

from pydantic import TypeAdapter

from oasst.client._admin import AdminApi, StatsApi
from oasst.client._base import API_PREFIX, dump, query, user_header
from oasst.client._messages import MessagesApi
from oasst.client._users import UsersApi
from oasst.protocol.common import User
from oasst.protocol.tasks import (
    AnyTask,
    MessageRanking,
    MessageRating,
    TaskAck,
    TaskClose,
    TaskDone,
    TaskNAck,
    TaskRequest,
    TaskRequestType,
    TextLabels,
    TextReplyToMessage,
)

__all__ = ["API_PREFIX", "BackendClient", "Interaction", "user_header"]

Interaction = TextReplyToMessage | MessageRanking | TextLabels | MessageRating

_TASK_ADAPTER: TypeAdapter[AnyTask] = TypeAdapter(AnyTask)
_COUNTS_ADAPTER: TypeAdapter[dict[str, int]] = TypeAdapter(dict[str, int])


class BackendClient(MessagesApi, UsersApi, StatsApi, AdminApi):
    """Async client of one backend, authenticated with one API key.

    ``base_url`` is the server's root (``http://127.0.0.1:8080``; a trailing ``/api/v1`` is accepted).
    Pass ``http`` to reuse an ``httpx.AsyncClient`` you own (it is not closed by this client), or
    ``transport`` (e.g. ``httpx.ASGITransport(app=app)``) to reach an in-process app.

    Reads that take ``as_user`` send it as ``x-oasst-user``, so answers carry that user's view (their
    emojis, whether they wrote a message, their highlighted rank). Moderation, user changes, stats and
    admin calls need a trusted key; API-key management needs a root token instead.
    """

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
        data = await self._call("POST", "/tasks/", json=dump(body))
        return self._parse(_TASK_ADAPTER, data, "task")

    async def get_task(self, task_id: UUID | str) -> AnyTask:
        """``GET /tasks/{id}``: a task handed out earlier, while it is still open (an oasst addition)."""
        data = await self._call("GET", f"/tasks/{task_id}")
        return self._parse(_TASK_ADAPTER, data, "task")

    async def ack_task(self, task_id: UUID | str, frontend_message_id: str) -> None:
        """``POST /tasks/{id}/ack``: accept the task, binding it to the frontend's own message id."""
        await self._call("POST", f"/tasks/{task_id}/ack", json=dump(TaskAck(message_id=frontend_message_id)))

    async def nack_task(
        self, task_id: UUID | str, reason: str | None = None, *, release: bool = False
    ) -> None:
        """``POST /tasks/{id}/nack``: skip the task (no ack is needed first).

        With ``release`` the task is only given back: its item is not hidden from the user (oasst).
        """
        # "release" only when asked for: otherwise the body is exactly the original protocol's
        body = TaskNAck(reason=reason, release=release).model_dump(
            mode="json", exclude=None if release else {"release"}
        )
        await self._call("POST", f"/tasks/{task_id}/nack", json=body)

    async def close_task(self, frontend_message_id: str) -> None:
        """``POST /tasks/close``: close a collective task, named by the frontend id it was acked with."""
        await self._call("POST", "/tasks/close", json=dump(TaskClose(message_id=frontend_message_id)))

    async def post_interaction(self, interaction: Interaction) -> TaskDone:
        """``POST /tasks/interaction``: submit a reply, ranking or labels for an acked task."""
        data = await self._call("POST", "/tasks/interaction", json=dump(interaction))
        return self._parse(TaskDone, data, "task_done")

    async def availability(self, user: User | None, lang: str | None = "en") -> dict[str, int]:
        """``POST /tasks/availability``: how many tasks of each type ``user`` could get now."""
        body = dump(user) if user is not None else None
        data = await self._call("POST", "/tasks/availability", json=body, params=query(lang=lang or None))
        return self._parse(_COUNTS_ADAPTER, data, "task availability")
