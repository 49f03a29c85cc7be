"""Chats and their message trees: the rules of who may add what where, votes, reports and draft picks.

Tree rules (the original's, §7.1 of the reference, except that the first message can be edited too):

* a user message without a parent is a first message; in a chat that has one, it is an edit of it (the
  original took a root only in an empty chat, so the first message could never be edited);
* a user message answers an assistant message that finished with text (complete or stopped);
* an assistant message answers a user message;
* siblings are alternatives: regenerate = another assistant reply to the same user message; edit = a new
  user message with the same parent as the edited one (no parent, for the first message).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from http import HTTPStatus

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from oasst.inference.protocol import (
    ChatRead,
    ChatWithMessages,
    CreateChat,
    CreateReport,
    FinishReason,
    MessageRead,
    MessageState,
    Role,
    SamplingParameters,
    UpdateChat,
)
from oasst.inference.server.errors import ErrorCode, InferenceError, not_found
from oasst.inference.server.ids import new_id
from oasst.inference.server.models import Chat, Message, Report, User, utcnow

REPLYABLE_STATES = {MessageState.complete.value, MessageState.cancelled.value}


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def chat_read(chat: Chat) -> ChatRead:
    return ChatRead(
        id=chat.id,
        title=chat.title,
        hidden=chat.hidden,
        allow_data_use=chat.allow_data_use,
        system_prompt=chat.system_prompt,
        custom_instructions=chat.custom_instructions,
        created_at=_aware(chat.created_at),
        modified_at=_aware(chat.modified_at),
    )


def message_read(m: Message) -> MessageRead:
    return MessageRead(
        id=m.id,
        chat_id=m.chat_id,
        parent_id=m.parent_id,
        role=Role(m.role),
        content=m.content,
        state=MessageState(m.state),
        model=m.model,
        sampling=SamplingParameters.model_validate(m.sampling) if m.sampling else None,
        error=m.error,
        score=m.score,
        draft_group=m.draft_group,
        selected=m.selected,
        finish_reason=FinishReason(m.finish_reason) if m.finish_reason else None,
        prompt_tokens=m.prompt_tokens or 0,
        completion_tokens=m.completion_tokens or 0,
        created_at=_aware(m.created_at),
        finished_at=_aware(m.finished_at) if m.finished_at else None,
    )


def ensure_user(session: Session, user_id: str, display_name: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        user = User(id=user_id, display_name=display_name)
        session.add(user)
        session.flush()
    elif display_name and user.display_name != display_name:
        user.display_name = display_name
    return user


def create_chat(session: Session, *, user_id: str, display_name: str, body: CreateChat) -> Chat:
    ensure_user(session, user_id, display_name)
    chat = Chat(
        id=new_id(),
        user_id=user_id,
        title=body.title,
        hidden=False,
        allow_data_use=body.allow_data_use,
        system_prompt=body.system_prompt or None,
        custom_instructions=body.custom_instructions or None,
        deleted=False,
    )
    session.add(chat)
    session.flush()
    return chat


def get_chat(session: Session, chat_id: str, user_id: str, *, lock: bool = False) -> Chat:
    """The user's chat, or 404 (also for another user's chat: its existence is not revealed)."""
    stmt = select(Chat).where(Chat.id == chat_id, Chat.user_id == user_id, Chat.deleted.is_(False))
    if lock and session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    chat = session.scalars(stmt).one_or_none()
    if chat is None:
        raise not_found("chat")
    return chat


def get_message(session: Session, chat: Chat, message_id: str) -> Message:
    message = session.get(Message, message_id)
    if message is None or message.chat_id != chat.id:
        raise not_found("message")
    return message


def chat_messages(session: Session, chat_id: str) -> Sequence[Message]:
    return session.scalars(select(Message).where(Message.chat_id == chat_id).order_by(Message.id)).all()


def chat_with_messages(session: Session, chat: Chat) -> ChatWithMessages:
    return ChatWithMessages(
        **chat_read(chat).model_dump(), messages=[message_read(m) for m in chat_messages(session, chat.id)]
    )


def _escape_like(q: str) -> str:
    return q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_chats(
    session: Session,
    user_id: str,
    *,
    include_hidden: bool = False,
    limit: int = 20,
    cursor: str | None = None,
    q: str | None = None,
) -> tuple[list[Chat], str | None]:
    """The user's chats, newest first; ``cursor`` is the last id of the previous page; ``q`` searches
    titles and message texts (case-insensitive)."""
    stmt = select(Chat).where(Chat.user_id == user_id, Chat.deleted.is_(False))
    if not include_hidden:
        stmt = stmt.where(Chat.hidden.is_(False))
    if cursor:
        stmt = stmt.where(Chat.id < cursor)
    if q:
        pattern = f"%{_escape_like(q.lower())}%"
        in_messages = (
            select(Message.id)
            .where(Message.chat_id == Chat.id, func.lower(Message.content).like(pattern, escape="\\"))
            .exists()
        )
        stmt = stmt.where(or_(func.lower(Chat.title).like(pattern, escape="\\"), in_messages))
    rows = list(session.scalars(stmt.order_by(Chat.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


def update_chat(session: Session, chat: Chat, body: UpdateChat) -> Chat:
    # fields left out stay as they are; an explicit null or "" clears a text field
    for name, value in body.model_dump(exclude_unset=True).items():
        if name in {"hidden", "allow_data_use"}:
            if value is not None:
                setattr(chat, name, value)
        else:
            setattr(chat, name, value or None)
    chat.modified_at = utcnow()
    return chat


def hide_all(session: Session, user_id: str) -> int:
    chats = session.scalars(select(Chat).where(Chat.user_id == user_id, Chat.hidden.is_(False))).all()
    for chat in chats:
        chat.hidden = True
    return len(chats)


def delete_chat(session: Session, chat: Chat) -> None:
    """Deleting erases the texts (the ids stay for the rows that point at them) and hides the chat forever."""
    chat.deleted = True
    chat.title = None
    chat.system_prompt = None
    chat.custom_instructions = None
    chat.allow_data_use = False
    for m in chat_messages(session, chat.id):
        m.content = ""


def _count(session: Session, chat_id: str) -> int:
    return int(session.scalar(select(func.count()).where(Message.chat_id == chat_id)) or 0)


def check_room(session: Session, chat: Chat, *, adding: int, max_messages: int) -> None:
    if _count(session, chat.id) + adding > max_messages:
        raise InferenceError(
            f"A chat holds at most {max_messages} messages; start a new chat.",
            ErrorCode.CHAT_TOO_LONG,
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )


def add_user_message(
    session: Session,
    chat: Chat,
    *,
    parent_id: str | None,
    content: str,
    max_messages: int,
    max_length: int,
) -> Message:
    if len(content) > max_length:
        raise InferenceError(
            f"A message holds at most {max_length} characters.",
            ErrorCode.MESSAGE_TOO_LONG,
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )
    check_room(session, chat, adding=1, max_messages=max_messages)
    if parent_id is not None:
        parent = session.get(Message, parent_id)
        if parent is None or parent.chat_id != chat.id:
            raise InferenceError("The parent is not a message of this chat.", ErrorCode.INVALID_PARENT)
        if parent.role != Role.assistant.value or parent.state not in REPLYABLE_STATES:
            raise InferenceError(
                "A user message answers a finished assistant message.", ErrorCode.INVALID_PARENT
            )
    message = Message(
        id=new_id(),
        chat_id=chat.id,
        parent_id=parent_id,
        role=Role.user.value,
        content=content,
        state=MessageState.manual.value,
        score=0,
        prompt_tokens=0,
        completion_tokens=0,
    )
    session.add(message)
    chat.modified_at = utcnow()
    if chat.title is None and parent_id is None:
        chat.title = content.strip().splitlines()[0][:100] if content.strip() else None
    session.flush()
    return message


def add_assistant_messages(
    session: Session,
    chat: Chat,
    *,
    parent_id: str,
    model: str,
    sampling: SamplingParameters,
    drafts: int,
    max_messages: int,
) -> list[Message]:
    """``drafts`` pending assistant replies to ``parent_id`` (sharing a draft group when more than one)."""
    parent = session.get(Message, parent_id)
    if parent is None or parent.chat_id != chat.id:
        raise InferenceError("The parent is not a message of this chat.", ErrorCode.INVALID_PARENT)
    if parent.role != Role.user.value:
        raise InferenceError("An assistant message answers a user message.", ErrorCode.INVALID_PARENT)
    check_room(session, chat, adding=drafts, max_messages=max_messages)
    group = new_id() if drafts > 1 else None
    now = utcnow()
    messages = [
        Message(
            id=new_id(),
            chat_id=chat.id,
            parent_id=parent_id,
            role=Role.assistant.value,
            content="",
            state=MessageState.pending.value,
            model=model,
            sampling=sampling.model_dump(mode="json"),
            score=0,
            draft_group=group,
            prompt_tokens=0,
            completion_tokens=0,
            created_at=now,
            queued_at=now,
        )
        for _ in range(drafts)
    ]
    session.add_all(messages)
    chat.modified_at = now
    session.flush()
    return messages


def delete_messages(session: Session, ids: list[str]) -> None:
    """Take back just-created pending messages (their queue was full): nothing half-written stays."""
    for message_id in ids:
        message = session.get(Message, message_id)
        if message is not None and message.state == MessageState.pending.value:
            session.delete(message)


def _assistant(session: Session, chat: Chat, message_id: str) -> Message:
    message = get_message(session, chat, message_id)
    if message.role != Role.assistant.value:
        raise InferenceError(
            "Only assistant messages take votes, reports and picks.", ErrorCode.NOT_AN_ASSISTANT_MESSAGE
        )
    return message


def vote(session: Session, chat: Chat, message_id: str, score: int) -> Message:
    message = _assistant(session, chat, message_id)
    message.score = score
    return message


def report(session: Session, chat: Chat, message_id: str, user_id: str, body: CreateReport) -> Report:
    message = _assistant(session, chat, message_id)
    row = Report(
        message_id=message.id, user_id=user_id, report_type=body.report_type.value, reason=body.reason
    )
    session.add(row)
    session.flush()
    return row


def pick_draft(session: Session, chat: Chat, selected_id: str) -> list[Message]:
    """Record the user's pick: the chosen draft ``selected=True``, the rest of its group ``False``."""
    chosen = _assistant(session, chat, selected_id)
    if chosen.draft_group is None:
        raise InferenceError("This message is not one of several drafts.", ErrorCode.NOT_A_DRAFT)
    if chosen.state != MessageState.complete.value:
        raise InferenceError("Pick a draft that has finished.", ErrorCode.MESSAGE_NOT_FINISHED)
    group = session.scalars(
        select(Message).where(Message.chat_id == chat.id, Message.draft_group == chosen.draft_group)
    ).all()
    for m in group:
        m.selected = m.id == chosen.id
    return list(group)
