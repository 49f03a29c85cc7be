"""Reading messages: lookups, navigation inside a tree, filtered listings, keyset pages and search.

Visibility: a trusted client sees every message. An untrusted client sees only messages its own users
wrote (``api_client_id`` is its own); anything else is reported as not found, so foreign ids cannot be
probed. Once a client may see a message, navigating from it (conversation, tree, children, …) returns the
tree's messages whoever wrote them, as the original backend does: trees are shared between frontends.

Lookups return ORM rows (for other services); the ``*_view`` functions return the wire models the routes
send, enriched with the reading user's own emojis and ``user_is_author``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, func, literal_column, or_, select
from sqlalchemy.orm import Session

from oasst.backend.db import is_postgres
from oasst.backend.errors import ErrorCode, OasstError
from oasst.backend.models import ApiClient, Message, MessageTreeState, User
from oasst.backend.services import clients as clients_service
from oasst.backend.services.conversations import (
    conversation_of,
    message_to_wire,
    thread_to,
    user_emojis_by_message,
)
from oasst.protocol import common as wire

T = TypeVar("T")
# A rendering of one message for its reader, e.g. :func:`tree_view` (routes pick one per endpoint).
View = Callable[[Session, Message, User | None], T]

MAX_PAGE_SIZE = 1000
_CURSOR = re.compile(r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\$(.*)$")


def _not_found(what: str = "Message not found.") -> OasstError:
    return OasstError(what, ErrorCode.MESSAGE_NOT_FOUND, HTTPStatus.NOT_FOUND)


# --------------------------------------------------------------------------------------------- lookups


def get_message(session: Session, *, client: ApiClient, message_id: uuid.UUID) -> Message:
    """The message with this internal id, if ``client`` may see it; else MESSAGE_NOT_FOUND (404)."""
    message = session.get(Message, message_id)
    if message is None or not (client.trusted or message.api_client_id == client.id):
        raise _not_found()
    return message


def lock_message(session: Session, message_id: uuid.UUID) -> Message | None:
    """Load a message fresh and lock its row until the transaction ends (``FOR UPDATE`` on PostgreSQL;
    SQLite transactions are serialised anyway). Use it before read-modify-write of its counters."""
    stmt = select(Message).where(Message.id == message_id)
    if is_postgres(session):
        stmt = stmt.with_for_update()
    return session.scalars(stmt.execution_options(populate_existing=True)).one_or_none()


def get_message_for_update(session: Session, *, client: ApiClient, message_id: uuid.UUID) -> Message:
    """Like :func:`get_message`, but the row stays locked (see :func:`lock_message`)."""
    message = lock_message(session, message_id)
    if message is None or not (client.trusted or message.api_client_id == client.id):
        raise _not_found()
    return message


def get_message_by_frontend_id(session: Session, *, client: ApiClient, frontend_message_id: str) -> Message:
    """The message this client knows by ``frontend_message_id`` (ids are per client)."""
    message = session.scalars(
        select(Message).where(
            Message.api_client_id == client.id, Message.frontend_message_id == frontend_message_id
        )
    ).one_or_none()
    if message is None:
        raise _not_found(f"No message with frontend id {frontend_message_id!r}.")
    return message


def find_reader(session: Session, *, client: ApiClient, frontend_user: tuple[str, str] | None) -> User | None:
    """The reading user named by ``x-oasst-user`` (never created here; unknown readers read anonymously)."""
    if frontend_user is None:
        return None
    auth_method, username = frontend_user
    return clients_service.find_user(session, client, username=username, auth_method=auth_method)


def get_tree_state(session: Session, tree_id: uuid.UUID) -> MessageTreeState:
    mts = session.get(MessageTreeState, tree_id)
    if mts is None:
        raise OasstError(
            "This message tree has no state.", ErrorCode.NO_MESSAGE_TREE_FOUND, HTTPStatus.NOT_FOUND
        )
    return mts


# ------------------------------------------------------------------------------------------ navigation


def tree_messages(
    session: Session, tree_id: uuid.UUID, *, include_spam: bool = True, include_deleted: bool = False
) -> list[Message]:
    """A tree's messages in creation order. Without spam only accepted (``review_result`` true) ones."""
    stmt = select(Message).where(Message.message_tree_id == tree_id)
    if not include_spam:
        stmt = stmt.where(Message.review_result.is_(True))
    if not include_deleted:
        stmt = stmt.where(Message.deleted.is_(False))
    return list(session.scalars(stmt.order_by(Message.created_date, Message.id)))


def children(session: Session, message: Message) -> list[Message]:
    """Direct, non-deleted replies (any review result), oldest first."""
    stmt = select(Message).where(Message.parent_id == message.id, Message.deleted.is_(False))
    return list(session.scalars(stmt.order_by(Message.created_date, Message.id)))


def descendants(session: Session, message: Message) -> list[Message]:
    """The non-deleted subtree below ``message`` (without it), depth-first in creation order."""
    stmt = select(Message).where(
        Message.message_tree_id == message.message_tree_id,
        Message.depth > message.depth,
        Message.deleted.is_(False),
    )
    by_parent: dict[uuid.UUID | None, list[Message]] = {}
    for m in session.scalars(stmt.order_by(Message.created_date, Message.id)):
        by_parent.setdefault(m.parent_id, []).append(m)
    result: list[Message] = []
    stack = list(reversed(by_parent.get(message.id, [])))
    while stack:
        current = stack.pop()
        result.append(current)
        stack.extend(reversed(by_parent.get(current.id, [])))
    return result


def longest_conversation(session: Session, tree_id: uuid.UUID) -> list[Message]:
    """Root → deepest accepted, non-deleted message (the earliest one among equally deep); [] if none."""
    accepted = tree_messages(session, tree_id, include_spam=False)
    if not accepted:
        return []
    deepest = min(accepted, key=lambda m: (-m.depth, m.created_date, m.id))
    return thread_to(session, deepest)


def max_children(session: Session, tree_id: uuid.UUID) -> tuple[Message | None, list[Message]]:
    """The accepted message with the most accepted, non-deleted replies, and those replies."""
    accepted = tree_messages(session, tree_id, include_spam=False)
    replies: dict[uuid.UUID, list[Message]] = {m.id: [] for m in accepted}
    for m in accepted:
        if m.parent_id in replies:
            replies[m.parent_id].append(m)
    if not accepted:
        return None, []
    best = min(accepted, key=lambda m: (-len(replies[m.id]), m.created_date, m.id))
    return best, replies[best.id]


# --------------------------------------------------------------------------------------------- views


def to_wire(
    session: Session,
    messages: Sequence[Message],
    *,
    reader: User | None = None,
    include_user: bool = False,
) -> list[wire.Message]:
    """Wire messages with the reader's own emojis; ``include_user`` adds each author's user record."""
    reader_id = reader.id if reader is not None else None
    emojis = user_emojis_by_message(session, reader_id, (m.id for m in messages))
    users: dict[uuid.UUID, User] = {}
    if include_user:
        ids = {m.user_id for m in messages if m.user_id is not None}
        if ids:
            users = {u.id: u for u in session.scalars(select(User).where(User.id.in_(ids)))}
    return [
        message_to_wire(
            m,
            user_emojis=emojis.get(m.id, []),
            reader_id=reader_id,
            user=users.get(m.user_id) if m.user_id is not None else None,
        )
        for m in messages
    ]


def message_view(session: Session, message: Message, reader: User | None) -> wire.Message:
    return to_wire(session, [message], reader=reader)[0]


def conversation_view(session: Session, message: Message, reader: User | None) -> wire.Conversation:
    return conversation_of(session, thread_to(session, message), reader_id=reader.id if reader else None)


def tree_view(
    session: Session,
    message: Message,
    reader: User | None,
    *,
    include_spam: bool = True,
    include_deleted: bool = False,
) -> wire.MessageTree:
    tree_id = message.message_tree_id
    found = tree_messages(session, tree_id, include_spam=include_spam, include_deleted=include_deleted)
    return wire.MessageTree(id=tree_id, messages=to_wire(session, found, reader=reader))


def children_view(session: Session, message: Message, reader: User | None) -> list[wire.Message]:
    return to_wire(session, children(session, message), reader=reader)


def descendants_view(session: Session, message: Message, reader: User | None) -> wire.MessageTree:
    return wire.MessageTree(
        id=message.id, messages=to_wire(session, descendants(session, message), reader=reader)
    )


def longest_conversation_view(session: Session, message: Message, reader: User | None) -> wire.Conversation:
    found = longest_conversation(session, message.message_tree_id)
    return conversation_of(session, found, reader_id=reader.id if reader else None)


def max_children_view(session: Session, message: Message, reader: User | None) -> wire.MessageTree:
    best, replies = max_children(session, message.message_tree_id)
    if best is None:
        return wire.MessageTree(id=message.message_tree_id, messages=[])
    return wire.MessageTree(id=best.id, messages=to_wire(session, [best, *replies], reader=reader))


def tree_state_view(mts: MessageTreeState) -> wire.MessageTreeStateResponse:
    return wire.MessageTreeStateResponse(
        message_tree_id=mts.message_tree_id,
        state=mts.state,
        active=mts.active,
        goal_tree_size=mts.goal_tree_size,
        max_depth=mts.max_depth,
        max_children_count=mts.max_children_count,
        lang=mts.lang,
        origin=mts.origin,
        won_prompt_lottery_date=mts.won_prompt_lottery_date,
    )


# ----------------------------------------------------------------------------------- listing and pages


@dataclass(frozen=True)
class MessageFilter:
    """What a listing may be narrowed to. ``auth_method`` and ``username`` go together."""

    user_id: uuid.UUID | None = None
    auth_method: str | None = None
    username: str | None = None
    api_client_id: uuid.UUID | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    only_roots: bool = False
    include_deleted: bool = False
    lang: str | None = None
    search_query: str | None = None


def _visible_client_id(client: ApiClient, requested: uuid.UUID | None) -> uuid.UUID | None:
    if client.trusted:
        return requested
    if requested is not None and requested != client.id:
        raise OasstError(
            "An untrusted API client may only list its own messages.",
            ErrorCode.API_CLIENT_NOT_AUTHORIZED,
            HTTPStatus.FORBIDDEN,
        )
    return client.id


def search_clause(session: Session, query: str) -> ColumnElement[bool]:
    """Every word of ``query`` must occur in the text: full-text search on PostgreSQL (it uses the GIN
    index on ``to_tsvector('simple', text)``), a case-insensitive substring match per word on SQLite."""
    if is_postgres(session):
        config: ColumnElement[Any] = literal_column("'simple'::regconfig")
        return func.to_tsvector(config, Message.text).bool_op("@@")(func.plainto_tsquery(config, query))
    words = [w.lower() for w in query.split()]
    escaped = [w.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for w in words]
    return and_(*(func.lower(Message.text).like(f"%{w}%", escape="\\") for w in escaped))


def filtered_messages(session: Session, *, client: ApiClient, filters: MessageFilter) -> Select[Message]:
    """The listing query for ``filters`` (without order or limit), scoped to what ``client`` may see."""
    stmt = select(Message)
    client_id = _visible_client_id(client, filters.api_client_id)
    if client_id is not None:
        stmt = stmt.where(Message.api_client_id == client_id)
    if filters.user_id is not None:
        stmt = stmt.where(Message.user_id == filters.user_id)
    if filters.auth_method or filters.username:
        if not (filters.auth_method and filters.username):
            raise OasstError(
                "Give both auth_method and username to filter by user.", ErrorCode.AUTH_AND_USERNAME_REQUIRED
            )
        stmt = stmt.join(User, User.id == Message.user_id).where(
            User.auth_method == filters.auth_method, User.username == filters.username
        )
    if filters.start_date is not None:
        stmt = stmt.where(Message.created_date >= filters.start_date)
    if filters.end_date is not None:
        stmt = stmt.where(Message.created_date <= filters.end_date)
    if filters.only_roots:
        stmt = stmt.where(Message.parent_id.is_(None))
    if not filters.include_deleted:
        stmt = stmt.where(Message.deleted.is_(False))
    if filters.lang is not None:
        stmt = stmt.where(Message.lang == filters.lang)
    if filters.search_query and filters.search_query.strip():
        stmt = stmt.where(search_clause(session, filters.search_query))
    return stmt


def _ordered(stmt: Select[Message], *, desc: bool) -> Select[Message]:
    if desc:
        return stmt.order_by(Message.created_date.desc(), Message.id.desc())
    return stmt.order_by(Message.created_date.asc(), Message.id.asc())


def list_messages(
    session: Session,
    *,
    client: ApiClient,
    filters: MessageFilter,
    desc: bool = True,
    max_count: int = 10,
    reader: User | None = None,
) -> list[wire.Message]:
    """Up to ``max_count`` messages by creation date (newest first unless ``desc`` is false)."""
    stmt = _ordered(filtered_messages(session, client=client, filters=filters), desc=desc)
    found = list(session.scalars(stmt.limit(min(max_count, MAX_PAGE_SIZE))))
    return to_wire(session, found, reader=reader)


# A cursor: the (created_date, id) of an item, or a bare date (then the bound is inclusive).
CursorKey = tuple[datetime, uuid.UUID | None]


def parse_cursor(value: str | None) -> CursorKey | None:
    """Read ``"<uuid>$<iso date>"`` (or a bare ISO date); anything else is INVALID_CURSOR_VALUE."""
    if not value:
        return None
    try:
        match = _CURSOR.match(value)
        key_id, date_text = (uuid.UUID(match[1]), match[2]) if match else (None, value)
        date = datetime.fromisoformat(date_text)
    except ValueError:
        raise OasstError(f"Invalid cursor value {value!r}.", ErrorCode.INVALID_CURSOR_VALUE) from None
    return (date.replace(tzinfo=UTC) if date.tzinfo is None else date), key_id


def format_cursor(message: Message) -> str:
    return f"{message.id}${message.created_date.isoformat()}"


def _beyond(key: CursorKey, *, later: bool) -> ColumnElement[bool]:
    """Rows strictly later (or earlier) than the cursor in (created_date, id) order."""
    date, key_id = key
    if key_id is None:
        return Message.created_date >= date if later else Message.created_date <= date
    if later:
        return or_(Message.created_date > date, and_(Message.created_date == date, Message.id > key_id))
    return or_(Message.created_date < date, and_(Message.created_date == date, Message.id < key_id))


def cursor_page(
    session: Session,
    *,
    client: ApiClient,
    filters: MessageFilter,
    before: str | None = None,
    after: str | None = None,
    desc: bool = False,
    max_count: int = 10,
    reader: User | None = None,
    include_user: bool = False,
) -> wire.MessagePage:
    """One keyset page. ``after``/``before`` are cursors in display order (``desc`` flips it); pass a
    page's ``next`` as ``after`` for the following page and its ``prev`` as ``before`` for the one before."""
    after_key, before_key = parse_cursor(after), parse_cursor(before)
    max_count = min(max_count, MAX_PAGE_SIZE)
    stmt = filtered_messages(session, client=client, filters=filters)
    if after_key is not None:
        stmt = stmt.where(_beyond(after_key, later=not desc))
    if before_key is not None:
        stmt = stmt.where(_beyond(before_key, later=desc))
    backwards = before_key is not None and after_key is None
    one_sided = after_key is None or before_key is None
    limit = max_count + 1 if one_sided else max_count
    rows = list(session.scalars(_ordered(stmt, desc=desc != backwards).limit(limit)))
    has_more = one_sided and len(rows) > max_count
    rows = rows[:max_count]
    if backwards:
        rows.reverse()
    prev_cursor = next_cursor = None
    if rows:
        if after_key is not None or (backwards and has_more):
            prev_cursor = format_cursor(rows[0])
        if before_key is not None or (not backwards and has_more):
            next_cursor = format_cursor(rows[-1])
    else:
        prev_cursor, next_cursor = after or None, before or None
    return wire.MessagePage(
        prev=prev_cursor,
        next=next_cursor,
        sort_key="created_date",
        order="desc" if desc else "asc",
        items=to_wire(session, rows, reader=reader, include_user=include_user),
    )
