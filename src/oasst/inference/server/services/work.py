"""The life of an assistant message as work: every transition is one conditional update.

``pending → in_progress`` (a worker took it), ``in_progress → complete | failed`` (the worker answered),
``pending | in_progress → cancelled | timeout`` (stop, limits), ``in_progress → pending`` (its worker died
before streaming anything). A transition returns the message only if it happened here, so exactly one
of several racing processes publishes the outcome.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from oasst.inference.protocol import (
    ChatTurn,
    FinishReason,
    MessageState,
    Role,
    SamplingParameters,
    Usage,
    WorkRequest,
)
from oasst.inference.server.models import Chat, Message, utcnow

ACTIVE = (MessageState.pending.value, MessageState.in_progress.value)


def system_turn(chat: Chat) -> ChatTurn | None:
    parts = [chat.system_prompt or ""]
    if chat.custom_instructions:
        parts.append(f"Custom instructions from the user:\n{chat.custom_instructions}")
    text = "\n\n".join(p for p in parts if p)
    return ChatTurn(role=Role.system, content=text) if text else None


def conversation(session: Session, message: Message) -> list[ChatTurn]:
    """The system turn, then the ancestor path of ``message`` from the root, oldest first."""
    chat = session.get(Chat, message.chat_id)
    assert chat is not None
    path: list[ChatTurn] = []
    parent_id = message.parent_id
    while parent_id is not None:
        parent = session.get(Message, parent_id)
        if parent is None:
            break
        path.append(ChatTurn(role=Role(parent.role), content=parent.content))
        parent_id = parent.parent_id
    path.reverse()
    system = system_turn(chat)
    return [system, *path] if system else path


def _set(session: Session, message_id: str, where: Iterable[Any], **values: Any) -> bool:
    """Update the message if it matches ``where``; whether it did."""
    result = session.execute(
        update(Message).where(Message.id == message_id, *where).values(**values),
        execution_options={"synchronize_session": False},
    )
    assert isinstance(result, CursorResult)
    return result.rowcount == 1


def _update(session: Session, message_id: str, where: Iterable[Any], **values: Any) -> Message | None:
    if not _set(session, message_id, where, **values):
        return None
    return session.get(Message, message_id, populate_existing=True)


def start_work(
    session: Session, message_id: str, *, session_id: str, worker_key_id: str, deadline_s: float
) -> WorkRequest | None:
    """Mark a pending message in progress on this worker session; None if it is no longer pending."""
    if not mark_started(session, message_id, session_id=session_id, worker_key_id=worker_key_id):
        return None
    message = session.get(Message, message_id, populate_existing=True)
    assert message is not None  # just updated in this transaction
    return WorkRequest(
        id=message.id,
        model=message.model or "",
        messages=conversation(session, message),
        sampling=SamplingParameters.model_validate(message.sampling or {}),
        deadline_s=deadline_s,
    )


def mark_started(session: Session, message_id: str, *, session_id: str, worker_key_id: str) -> bool:
    """``pending → in_progress`` on this worker session; False if the message is no longer pending."""
    return _set(
        session,
        message_id,
        [Message.state == MessageState.pending.value],
        state=MessageState.in_progress.value,
        worker_session=session_id,
        worker_key_id=worker_key_id,
        started_at=utcnow(),
    )


def complete_work(
    session: Session,
    message_id: str,
    *,
    session_id: str,
    text: str,
    finish_reason: FinishReason,
    usage: Usage,
) -> Message | None:
    state = MessageState.cancelled if finish_reason == FinishReason.cancelled else MessageState.complete
    return _update(
        session,
        message_id,
        [Message.state == MessageState.in_progress.value, Message.worker_session == session_id],
        state=state.value,
        content=text,
        finish_reason=finish_reason.value,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        finished_at=utcnow(),
    )


def finish(
    session: Session,
    message_id: str,
    *,
    state: MessageState,
    error: str | None,
    text: str | None,
    session_id: str | None = None,
    from_states: tuple[str, ...] = ACTIVE,
) -> Message | None:
    """End an active message (stop, timeout, failure); ``text`` (the part streamed so far) is kept."""
    where: list[Any] = [Message.state.in_(from_states)]
    if session_id is not None:
        where.append(Message.worker_session == session_id)
    values: dict[str, Any] = {"state": state.value, "error": error, "finished_at": utcnow()}
    if text is not None:
        values["content"] = text
    if state == MessageState.cancelled:
        values["finish_reason"] = FinishReason.cancelled.value
    return _update(session, message_id, where, **values)


def requeue(session: Session, message_id: str, *, session_id: str) -> Message | None:
    """Back to pending: its worker died before streaming a token."""
    return _update(
        session,
        message_id,
        [Message.state == MessageState.in_progress.value, Message.worker_session == session_id],
        state=MessageState.pending.value,
        worker_session=None,
        worker_key_id=None,
        started_at=None,
        queued_at=utcnow(),
    )


def in_progress_of_session(session: Session, session_id: str) -> list[tuple[str, str]]:
    rows = session.execute(
        select(Message.id, Message.model).where(
            Message.state == MessageState.in_progress.value, Message.worker_session == session_id
        )
    ).all()
    return [(r[0], r[1] or "") for r in rows]


def in_progress_sessions(session: Session) -> set[str]:
    rows = session.scalars(
        select(Message.worker_session)
        .where(Message.state == MessageState.in_progress.value, Message.worker_session.is_not(None))
        .distinct()
    ).all()
    return {r for r in rows if r}


def overdue_pending(session: Session, *, waited_s: float, limit: int = 200) -> list[tuple[str, str]]:
    before = utcnow() - timedelta(seconds=waited_s)
    rows = session.execute(
        select(Message.id, Message.model)
        .where(Message.state == MessageState.pending.value, Message.queued_at < before)
        .limit(limit)
    ).all()
    return [(r[0], r[1] or "") for r in rows]


def overdue_in_progress(session: Session, *, running_s: float, limit: int = 200) -> list[tuple[str, str]]:
    before: datetime = utcnow() - timedelta(seconds=running_s)
    rows = session.execute(
        select(Message.id, Message.model)
        .where(Message.state == MessageState.in_progress.value, Message.started_at < before)
        .limit(limit)
    ).all()
    return [(r[0], r[1] or "") for r in rows]
