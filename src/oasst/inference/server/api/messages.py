"""Messages of a chat: add a user message, ask for assistant replies (drafts), follow, stop, feedback.

Paths (all under ``/chats/{chat_id}``):

* ``POST /messages`` — a user message (``parent_id`` null starts the chat; the same parent as an
  existing user message = an edit, a sibling branch).
* ``POST /assistant-messages`` — ``drafts`` pending replies to a user message (regenerate = call again).
* ``GET /messages/{id}``, ``GET /messages/{id}/events`` (SSE), ``POST /messages/{id}/stop``.
* ``PUT /messages/{id}/vote``, ``POST /messages/{id}/reports``, ``POST /draft-picks``.
"""

from __future__ import annotations

from http import HTTPStatus

from fastapi import APIRouter
from sqlalchemy.orm import Session

from oasst.inference.protocol import (
    FINAL_STATES,
    AssistantMessages,
    CreateAssistantMessage,
    CreateReport,
    CreateUserMessage,
    DraftPick,
    MessageRead,
    Role,
    Vote,
)
from oasst.inference.server.api.deps import CurrentUser, RuntimeDep
from oasst.inference.server.errors import ErrorCode, InferenceError
from oasst.inference.server.services import chats as service
from oasst.inference.server.streams import EventStreamResponse, message_sse

router = APIRouter(prefix="/chats/{chat_id}", tags=["messages"])


@router.post("/messages", status_code=201)
async def create_user_message(
    chat_id: str, body: CreateUserMessage, user: CurrentUser, rt: RuntimeDep
) -> MessageRead:
    s = rt.settings

    def work(x: Session) -> MessageRead:
        chat = service.get_chat(x, chat_id, user.user_id, lock=True)
        message = service.add_user_message(
            x,
            chat,
            parent_id=body.parent_id,
            content=body.content,
            max_messages=s.max_chat_messages,
            max_length=s.max_message_length,
        )
        return service.message_read(message)

    return await rt.db.awrite(work)


@router.post("/assistant-messages", status_code=202)
async def create_assistant_messages(
    chat_id: str, body: CreateAssistantMessage, user: CurrentUser, rt: RuntimeDep
) -> AssistantMessages:
    s = rt.settings
    if body.drafts > s.max_drafts:
        raise InferenceError(f"At most {s.max_drafts} drafts at once.", ErrorCode.TOO_MANY_DRAFTS)
    model = body.model or s.default_model
    await rt.check_model(model)
    sampling = rt.resolve_sampling(model, body.preset, body.sampling)
    await rt.check_reply_limit(user.user_id, body.drafts)

    def work(x: Session) -> list[MessageRead]:
        chat = service.get_chat(x, chat_id, user.user_id, lock=True)
        rows = service.add_assistant_messages(
            x,
            chat,
            parent_id=body.parent_id,
            model=model,
            sampling=sampling,
            drafts=body.drafts,
            max_messages=s.max_chat_messages,
        )
        return [service.message_read(m) for m in rows]

    messages = await rt.db.awrite(work)
    await rt.enqueue(model, [m.id for m in messages])
    return AssistantMessages(messages=messages)


async def _message(rt: RuntimeDep, chat_id: str, message_id: str, user_id: str) -> MessageRead:
    return await rt.db.aread(
        lambda x: service.message_read(
            service.get_message(x, service.get_chat(x, chat_id, user_id), message_id)
        )
    )


@router.get("/messages/{message_id}")
async def get_message(chat_id: str, message_id: str, user: CurrentUser, rt: RuntimeDep) -> MessageRead:
    return await _message(rt, chat_id, message_id, user.user_id)


@router.get(
    "/messages/{message_id}/events",
    response_class=EventStreamResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "pending, token…, message|error"}},
)
async def message_events(
    chat_id: str, message_id: str, user: CurrentUser, rt: RuntimeDep
) -> EventStreamResponse:
    message = await _message(rt, chat_id, message_id, user.user_id)
    if message.role != Role.assistant:
        raise InferenceError("Only assistant messages have events.", ErrorCode.NOT_AN_ASSISTANT_MESSAGE)
    return EventStreamResponse(message_sse(rt, message.id, message.model or ""))


@router.post("/messages/{message_id}/stop")
async def stop_message(chat_id: str, message_id: str, user: CurrentUser, rt: RuntimeDep) -> MessageRead:
    """Stop generating: ``cancelled`` with the text so far. A message that already ended is returned as is."""
    message = await _message(rt, chat_id, message_id, user.user_id)
    if message.role != Role.assistant:
        raise InferenceError("Only assistant messages can be stopped.", ErrorCode.NOT_AN_ASSISTANT_MESSAGE)
    if message.state not in FINAL_STATES:
        stopped = await rt.stop(message.id, message.model or "")
        if stopped is not None:
            return service.message_read(stopped)
    return await _message(rt, chat_id, message_id, user.user_id)


@router.put("/messages/{message_id}/vote")
async def vote(chat_id: str, message_id: str, body: Vote, user: CurrentUser, rt: RuntimeDep) -> MessageRead:
    return await rt.db.awrite(
        lambda x: service.message_read(
            service.vote(x, service.get_chat(x, chat_id, user.user_id), message_id, body.score)
        )
    )


@router.post("/messages/{message_id}/reports", status_code=HTTPStatus.CREATED)
async def report(
    chat_id: str, message_id: str, body: CreateReport, user: CurrentUser, rt: RuntimeDep
) -> dict[str, int]:
    row = await rt.db.awrite(
        lambda x: service.report(
            x, service.get_chat(x, chat_id, user.user_id), message_id, user.user_id, body
        )
    )
    return {"id": row.id}


@router.post("/draft-picks")
async def pick_draft(chat_id: str, body: DraftPick, user: CurrentUser, rt: RuntimeDep) -> list[MessageRead]:
    """Record which draft the user chose; the other drafts of its group are recorded as not chosen."""
    return await rt.db.awrite(
        lambda x: [
            service.message_read(m)
            for m in service.pick_draft(x, service.get_chat(x, chat_id, user.user_id), body.selected_id)
        ]
    )
