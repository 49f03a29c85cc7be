"""Emoji reactions on messages: per-user rows in ``message_emoji``, counts denormalised in ``message.emojis``.

Rules (the original's): ``toggle`` (default) flips, ``add``/``remove`` are idempotent; ``+1`` and ``-1``
exclude each other per user; ``+1``/``-1`` on one's own message is silently ignored; ``red_flag`` puts the
message (back) into the moderation queue (``flagged_message``, ``processed=False``).

Counts are race-free: every change first locks the message row (``SELECT ... FOR UPDATE`` on PostgreSQL;
SQLite transactions are serialised), then reads and writes the counter under that lock.
"""

from __future__ import annotations

import uuid
from http import HTTPStatus

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from oasst.backend.db import lock_tree
from oasst.backend.errors import ErrorCode, OasstError
from oasst.backend.models import ApiClient, FlaggedMessage, Message, MessageEmoji, User, utcnow
from oasst.backend.services import clients as clients_service
from oasst.backend.services import messages as messages_service
from oasst.backend.services import tree_manager
from oasst.backend.settings import TreeManagerConfiguration
from oasst.protocol import common as wire
from oasst.protocol.common import EmojiCode, EmojiOp

_VOTES = {EmojiCode.thumbs_up: EmojiCode.thumbs_down, EmojiCode.thumbs_down: EmojiCode.thumbs_up}


def is_internal(emoji: EmojiCode | str) -> bool:
    """The ``_skip_*`` codes are written by the task service, never by frontends."""
    return str(emoji).startswith("_")


def flag_message(session: Session, message_id: uuid.UUID) -> None:
    """Upsert the message into the moderation queue as unprocessed (atomic on both databases)."""
    values = {"message_id": message_id, "processed": False, "created_date": utcnow()}
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(FlaggedMessage).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[FlaggedMessage.message_id],
        set_={"processed": False, "created_date": values["created_date"]},
    )
    session.execute(stmt)


def _has_emoji(session: Session, message_id: uuid.UUID, user_id: uuid.UUID, emoji: str) -> bool:
    stmt = select(MessageEmoji.emoji).where(
        MessageEmoji.message_id == message_id, MessageEmoji.user_id == user_id, MessageEmoji.emoji == emoji
    )
    return session.scalar(stmt) is not None


def _bump(message: Message, emoji: str, delta: int) -> None:
    counts = dict(message.emojis or {})
    count = counts.get(emoji, 0) + delta
    if count > 0:
        counts[emoji] = count
    else:
        counts.pop(emoji, None)
    message.emojis = counts  # a new dict, so the JSON column is written


def _add(session: Session, message: Message, user: User, emoji: EmojiCode) -> None:
    opposite = _VOTES.get(emoji)
    if opposite is not None:
        if message.user_id == user.id:
            return  # voting on one's own message is silently ignored
        if _has_emoji(session, message.id, user.id, opposite):
            _remove(session, message, user, opposite)
    if emoji == EmojiCode.red_flag:
        flag_message(session, message.id)
    session.add(MessageEmoji(message_id=message.id, user_id=user.id, emoji=str(emoji), created_date=utcnow()))
    _bump(message, str(emoji), +1)


def _remove(session: Session, message: Message, user: User, emoji: EmojiCode) -> None:
    session.execute(
        delete(MessageEmoji).where(
            MessageEmoji.message_id == message.id,
            MessageEmoji.user_id == user.id,
            MessageEmoji.emoji == str(emoji),
        )
    )
    _bump(message, str(emoji), -1)


def apply_emoji(
    session: Session, *, message: Message, user: User, emoji: EmojiCode, op: EmojiOp = EmojiOp.togggle
) -> Message:
    """Apply one emoji operation by ``user``. ``message`` must be locked by the caller (see
    :func:`messages.get_message_for_update`). Internal ``_skip_*`` codes are allowed here."""
    exists = _has_emoji(session, message.id, user.id, str(emoji))
    if op == EmojiOp.togggle:
        op = EmojiOp.remove if exists else EmojiOp.add
    if op == EmojiOp.add and not exists:
        _add(session, message, user, emoji)
    elif op == EmojiOp.remove and exists:
        _remove(session, message, user, emoji)
    session.flush()
    return message


def add_emoji(session: Session, *, message_id: uuid.UUID, user: User, emoji: EmojiCode) -> Message:
    """Lock the message and add ``emoji`` by ``user`` (idempotent); for other services, e.g. task skips."""
    message = messages_service.lock_message(session, message_id)
    if message is None:
        raise OasstError("Message not found.", ErrorCode.MESSAGE_NOT_FOUND, HTTPStatus.NOT_FOUND)
    return apply_emoji(session, message=message, user=user, emoji=emoji, op=EmojiOp.add)


def lock_for_emoji(
    session: Session, *, client: ApiClient, message_id: uuid.UUID, red_flag: bool = False
) -> Message:
    """Lock the message row for an emoji change. A red flag may make auto-moderation change the tree, so
    then the tree's state row is locked first, in the same order as every other tree write."""
    if red_flag:
        message = messages_service.get_message(session, client=client, message_id=message_id)
        lock_tree(session, message.message_tree_id)
    return messages_service.get_message_for_update(session, client=client, message_id=message_id)


def handle_emoji_request(
    session: Session,
    *,
    client: ApiClient,
    message_id: uuid.UUID,
    request: wire.MessageEmojiRequest,
    cfg: TreeManagerConfiguration,
) -> wire.Message:
    """``POST /messages/{id}/emoji``: apply the request and return the message as its user now sees it.

    A red flag runs auto-moderation on the message at once (enough flags abort a prompt's tree or delete
    a reply with its subtree)."""
    if is_internal(request.emoji):
        raise OasstError(
            f"The emoji {request.emoji.value!r} is internal and cannot be set through this endpoint.",
            ErrorCode.EMOJI_OP_UNSUPPORTED,
        )
    user = clients_service.get_or_create_user(session, client, request.user)
    clients_service.ensure_user_can_work(user, enforce_tos=False)
    red_flag = request.emoji == EmojiCode.red_flag
    message = lock_for_emoji(session, client=client, message_id=message_id, red_flag=red_flag)
    apply_emoji(session, message=message, user=user, emoji=request.emoji, op=request.op)
    if red_flag:
        tree_manager.auto_moderate_message(session, message, cfg)
        session.refresh(message)
    return messages_service.message_view(session, message, user)
