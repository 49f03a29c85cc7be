"""Turning stored messages into the wire shapes frontends see (conversation, message, tree)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from oasst.backend.errors import ErrorCode, OasstError
from oasst.backend.models import Message, MessageEmoji, User
from oasst.protocol import common as wire


def frontend_user(user: User) -> wire.FrontEndUser:
    return wire.FrontEndUser(
        id=user.username,
        display_name=user.display_name,
        auth_method=user.auth_method,
        user_id=user.id,
        enabled=user.enabled,
        deleted=user.deleted,
        notes=user.notes,
        created_date=user.created_date,
        show_on_leaderboard=user.show_on_leaderboard,
        streak_days=user.streak_days,
        streak_last_day_date=user.streak_last_day_date,
        last_activity_date=user.last_activity_date,
        tos_acceptance_date=user.tos_acceptance_date,
    )


def conversation_message(
    message: Message,
    *,
    user_emojis: list[str] | None = None,
    reader_id: uuid.UUID | None = None,
    hide_synthetic: bool = False,
) -> wire.ConversationMessage:
    return wire.ConversationMessage(
        id=message.id,
        user_id=message.user_id,
        frontend_message_id=message.frontend_message_id,
        text=message.text,
        lang=message.lang,
        is_assistant=message.role == "assistant",
        emojis=message.emojis or {},
        user_emojis=user_emojis if user_emojis is not None else [],
        user_is_author=(message.user_id == reader_id) if reader_id is not None else None,
        synthetic=None if hide_synthetic else message.synthetic,
    )


def message_to_wire(
    message: Message,
    *,
    user_emojis: list[str] | None = None,
    reader_id: uuid.UUID | None = None,
    user: User | None = None,
) -> wire.Message:
    base = conversation_message(message, user_emojis=user_emojis, reader_id=reader_id)
    return wire.Message(
        **base.model_dump(),
        parent_id=message.parent_id,
        created_date=message.created_date,
        review_result=message.review_result,
        review_count=message.review_count,
        deleted=message.deleted,
        edited=message.edited,
        model_name=message.model_name,
        message_tree_id=message.message_tree_id,
        ranking_count=message.ranking_count,
        rank=message.rank,
        user=frontend_user(user) if user is not None else None,
    )


def user_emojis_by_message(
    session: Session, user_id: uuid.UUID | None, message_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, list[str]]:
    """The reader's own (visible, non-internal) emojis on each message."""
    ids = list(message_ids)
    if user_id is None or not ids:
        return {}
    rows = session.connection().execute(_user_emojis_stmt(), {"user_id": user_id, "ids": ids}).all()
    result: dict[uuid.UUID, list[str]] = {}
    for message_id, emoji in rows:
        if not emoji.startswith("_"):
            result.setdefault(message_id, []).append(emoji)
    return result


def thread_to(session: Session, message: Message) -> list[Message]:
    """The root→message path (one query: all messages of the tree, walked in memory)."""
    return path_in(load_tree(session, message.message_tree_id), message.id, fallback=message)


def thread_by_id(session: Session, tree_id: uuid.UUID, message_id: uuid.UUID) -> list[Message]:
    """The root→message path of ``message_id`` in tree ``tree_id``, in one query."""
    return path_in(load_tree(session, tree_id), message_id)


def load_tree(session: Session, tree_id: uuid.UUID) -> dict[uuid.UUID, Message]:
    return {m.id: m for m in session.scalars(_tree_stmt(), {"tree_id": tree_id})}


def load_tree_for_reader(
    session: Session, tree_id: uuid.UUID, reader_id: uuid.UUID
) -> tuple[dict[uuid.UUID, Message], dict[uuid.UUID, list[str]]]:
    """A tree's messages and the reader's own visible emojis on them, in one query."""
    tree: dict[uuid.UUID, Message] = {}
    emojis: dict[uuid.UUID, list[str]] = {}
    for message, emoji in session.execute(_tree_emojis_stmt(), {"tree_id": tree_id, "user_id": reader_id}):
        tree[message.id] = message
        if emoji is not None and not emoji.startswith("_"):
            emojis.setdefault(message.id, []).append(emoji)
    return tree, emojis


@functools.cache
def _tree_emojis_stmt() -> Any:
    return (
        select(Message, MessageEmoji.emoji)
        .outerjoin(
            MessageEmoji,
            (MessageEmoji.message_id == Message.id) & (MessageEmoji.user_id == bindparam("user_id")),
        )
        .where(Message.message_tree_id == bindparam("tree_id"))
    )


@functools.cache
def _tree_stmt() -> Any:
    return select(Message).where(Message.message_tree_id == bindparam("tree_id"))


@functools.cache
def _user_emojis_stmt() -> Any:
    return select(MessageEmoji.message_id, MessageEmoji.emoji).where(
        MessageEmoji.user_id == bindparam("user_id"),
        MessageEmoji.message_id.in_(bindparam("ids", expanding=True)),
    )


def path_in(
    tree: dict[uuid.UUID, Message], message_id: uuid.UUID, *, fallback: Message | None = None
) -> list[Message]:
    """The root→message path within an already loaded tree."""
    current: Message | None = tree.get(message_id, fallback)
    if current is None:
        raise OasstError("The message no longer exists.", ErrorCode.MESSAGE_NOT_FOUND, HTTPStatus.NOT_FOUND)
    path: list[Message] = []
    while current is not None:
        path.append(current)
        if current.parent_id is None:
            break
        current = tree.get(current.parent_id)
        if current is None:
            raise OasstError(
                "The conversation is broken: a parent is missing.", ErrorCode.BROKEN_CONVERSATION
            )
    path.reverse()
    return path


def conversation_of(
    session: Session,
    messages: Sequence[Message],
    *,
    reader_id: uuid.UUID | None = None,
    emojis: dict[uuid.UUID, list[str]] | None = None,
) -> wire.Conversation:
    """The wire conversation; ``emojis`` (the reader's, by message) saves a query when already loaded."""
    if emojis is None:
        emojis = user_emojis_by_message(session, reader_id, (m.id for m in messages))
    return wire.Conversation(
        messages=[
            conversation_message(m, user_emojis=emojis.get(m.id, []), reader_id=reader_id) for m in messages
        ]
    )
