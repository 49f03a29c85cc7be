"""End users: lookup, keyset listing, moderation (ban, anonymise) and their messages.

Visibility rule of the original backend: an untrusted API client sees only the users (and messages) of
its own client; a trusted client sees everyone. Every function here takes the calling client and
applies that rule itself, so routes cannot forget it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, delete, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from oasst.backend.db import lock_tree
from oasst.backend.errors import ErrorCode, OasstError
from oasst.backend.models import (
    ApiClient,
    Journal,
    Message,
    MessageEmoji,
    MessageReaction,
    MessageRevision,
    Task,
    TextLabels,
    TrollStats,
    User,
    UserStats,
    utcnow,
)
from oasst.backend.services import clients as clients_service
from oasst.backend.services import moderation, tree_manager
from oasst.backend.services.conversations import frontend_user
from oasst.backend.settings import TreeManagerConfiguration
from oasst.protocol import common as wire

DELETED_USER_DISPLAY_NAME = "Deleted User"
DELETED_USER_ID_PREFIX = "deleted_"
USER_SORT_KEYS = ("username", "display_name")

T = TypeVar("T")
Bound = tuple[Any, uuid.UUID | None]


# --- keyset pagination (shared with the admin service) --------------------------------------------


def split_cursor(value: str | None, parse_key: Callable[[str], Any] = str) -> Bound | None:
    """``"<uuid>$<key>"`` (what pages hand out) or a bare ``"<key>"`` bound -> ``(key, id)``."""
    if not value:
        return None
    head, sep, tail = value.partition("$")
    try:
        if sep:
            return parse_key(tail), uuid.UUID(head)
        return parse_key(value), None
    except ValueError as exc:
        message = f"Invalid cursor value {value!r}: use a 'prev'/'next' value from an earlier page."
        raise OasstError(message, ErrorCode.INVALID_CURSOR_VALUE) from exc


def parse_cursor_date(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


@dataclass(frozen=True)
class Keyset:
    """One page request: inclusive key bounds with exclusive id tie-breaks, as the original pages."""

    lower: Bound | None
    upper: Bound | None
    query_desc: bool
    desc: bool
    limit: int
    max_count: int
    before: str | None
    after: str | None

    @classmethod
    def of(
        cls,
        *,
        before: str | None,
        after: str | None,
        desc: bool,
        max_count: int,
        parse_key: Callable[[str], Any] = str,
    ) -> Keyset:
        b, a = split_cursor(before, parse_key), split_cursor(after, parse_key)
        going_back = before is not None and not after
        return cls(
            lower=b if desc else a,
            upper=a if desc else b,
            query_desc=not going_back if desc else going_back,
            desc=desc,
            limit=max_count + 1 if before is None or after is None else max_count,
            max_count=max_count,
            before=before,
            after=after,
        )

    def where(self, key: Any, id_: Any) -> list[ColumnElement[bool]]:
        return key_bounds(key, id_, self.lower, self.upper)

    def order_by(self, key: Any, id_: Any) -> tuple[Any, Any]:
        return (key.desc(), id_.desc()) if self.query_desc else (key.asc(), id_.asc())

    def finish(
        self, rows: Sequence[T], cursor_of: Callable[[T], str]
    ) -> tuple[list[T], str | None, str | None]:
        """Drop the look-ahead row, restore the requested order, and compute prev/next cursors."""
        items = list(rows)
        num_rows = len(items)
        if self.limit > self.max_count and num_rows == self.limit:
            items = items[:-1]
        if self.desc != self.query_desc:
            items.reverse()
        if not items:
            return items, self.after, self.before
        prev = cursor_of(items[0]) if (num_rows > self.max_count and self.before) or self.after else None
        next_ = cursor_of(items[-1]) if num_rows > self.max_count or self.before else None
        return items, prev, next_


def key_bounds(key: Any, id_: Any, lower: Bound | None, upper: Bound | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if lower is not None:
        value, after_id = lower
        conditions.append(
            or_(key > value, and_(key == value, id_ > after_id)) if after_id is not None else key >= value
        )
    if upper is not None:
        value, before_id = upper
        conditions.append(
            or_(key < value, and_(key == value, id_ < before_id)) if before_id is not None else key <= value
        )
    return conditions


# --- lookup ---------------------------------------------------------------------------------------


def _forbidden() -> OasstError:
    return OasstError(
        "Untrusted API clients may only access their own users.",
        ErrorCode.API_CLIENT_NOT_AUTHORIZED,
        HTTPStatus.FORBIDDEN,
    )


def _user_not_found() -> OasstError:
    return OasstError("User not found.", ErrorCode.USER_NOT_FOUND, HTTPStatus.NOT_FOUND)


def _user_by_id(session: Session, user_id: uuid.UUID) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise _user_not_found()
    return user


def visible_client_id(client: ApiClient, api_client_id: uuid.UUID | None) -> uuid.UUID | None:
    """The client whose users a query may see: any (None) for trusted callers, else the caller's own."""
    if client.trusted:
        return api_client_id
    if api_client_id is not None and api_client_id != client.id:
        raise _forbidden()
    return client.id


def get_user(
    session: Session, client: ApiClient, user_id: uuid.UUID, *, api_client_id: uuid.UUID | None = None
) -> User:
    stmt = select(User).where(User.id == user_id)
    scope = visible_client_id(client, api_client_id)
    if scope is not None:
        stmt = stmt.where(User.api_client_id == scope)
    user = session.scalars(stmt).first()
    if user is None:
        raise _user_not_found()
    return user


def get_frontend_user(
    session: Session,
    client: ApiClient,
    *,
    auth_method: str,
    username: str,
    api_client_id: uuid.UUID | None = None,
) -> User:
    """The user ``(auth_method, username)`` of ``api_client_id`` (default: the caller's own client)."""
    scope = api_client_id or client.id
    if not client.trusted and scope != client.id:
        raise _forbidden()
    user = session.scalars(
        select(User).where(
            User.api_client_id == scope, User.auth_method == auth_method, User.username == username
        )
    ).first()
    if user is None:
        raise _user_not_found()
    return user


# --- listing --------------------------------------------------------------------------------------


def _sort_column(sort_key: str) -> InstrumentedAttribute[str]:
    if sort_key not in USER_SORT_KEYS:
        message = f"Unsupported sort key {sort_key!r}: use one of {', '.join(USER_SORT_KEYS)}."
        raise OasstError(message, ErrorCode.SORT_KEY_UNSUPPORTED)
    return User.username if sort_key == "username" else User.display_name


def _bound(value: str | None, id_: uuid.UUID | None) -> Bound | None:
    if value is None:
        if id_ is not None:
            raise OasstError("Keyset pagination needs both an id and a name.", ErrorCode.GENERIC_ERROR)
        return None
    return value, id_


def _users_stmt(
    client: ApiClient,
    column: InstrumentedAttribute[str],
    api_client_id: uuid.UUID | None,
    auth_method: str | None,
    search_text: str | None,
) -> Select[Any]:
    stmt = select(User)
    scope = visible_client_id(client, api_client_id)
    if scope is not None:
        stmt = stmt.where(User.api_client_id == scope)
    if auth_method:
        stmt = stmt.where(User.auth_method == auth_method)
    if search_text:  # a literal substring, case-insensitive on every database
        stmt = stmt.where(column.icontains(search_text, autoescape=True))
    return stmt


def list_users(
    session: Session,
    client: ApiClient,
    *,
    sort_key: str = "username",
    gte: str | None = None,
    gt_id: uuid.UUID | None = None,
    lte: str | None = None,
    lt_id: uuid.UUID | None = None,
    api_client_id: uuid.UUID | None = None,
    auth_method: str | None = None,
    search_text: str | None = None,
    limit: int | None = 100,
    desc: bool = False,
) -> list[User]:
    """Users ordered by ``sort_key`` then id, within inclusive name bounds (exclusive on the id)."""
    column = _sort_column(sort_key)
    stmt = _users_stmt(client, column, api_client_id, auth_method, search_text)
    stmt = stmt.where(*key_bounds(column, User.id, _bound(gte, gt_id), _bound(lte, lt_id))).order_by(
        *((column.desc(), User.id.desc()) if desc else (column.asc(), User.id.asc()))
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


def users_page(
    session: Session,
    client: ApiClient,
    *,
    sort_key: str = "username",
    before: str | None = None,
    after: str | None = None,
    max_count: int = 100,
    api_client_id: uuid.UUID | None = None,
    auth_method: str | None = None,
    search_text: str | None = None,
) -> wire.FrontEndUserPage:
    """One page of users; ``prev``/``next`` are ``"<user_id>$<sort key value>"`` cursors."""
    column = _sort_column(sort_key)
    keyset = Keyset.of(before=before, after=after, desc=False, max_count=max_count)
    stmt = _users_stmt(client, column, api_client_id, auth_method, search_text).where(
        *keyset.where(column, User.id)
    )
    rows = session.scalars(stmt.order_by(*keyset.order_by(column, User.id)).limit(keyset.limit)).all()
    items, prev, next_ = keyset.finish(rows, lambda u: f"{u.id}${getattr(u, sort_key)}")
    return wire.FrontEndUserPage(
        prev=prev,
        next=next_,
        sort_key=sort_key,
        order="asc",
        items=[frontend_user(u) for u in items],
    )


# --- moderation -----------------------------------------------------------------------------------


def update_user(
    session: Session,
    user: User | uuid.UUID,
    *,
    cfg: TreeManagerConfiguration,
    display_name: str | None = None,
    enabled: bool | None = None,
    notes: str | None = None,
    show_on_leaderboard: bool | None = None,
    tos_acceptance: bool | None = None,
) -> User:
    """Set what is given (None leaves a field alone); disabling a user also halts their lottery prompts.

    Only trusted clients may call this (routes check); ``user`` is a row or a global user id.
    """
    user = user if isinstance(user, User) else _user_by_id(session, user)
    disabling = enabled is False and user.enabled
    if enabled is not None:
        user.enabled = enabled
    if notes is not None:
        user.notes = notes
    if show_on_leaderboard is not None:
        user.show_on_leaderboard = show_on_leaderboard
    if tos_acceptance:
        user.tos_acceptance_date = utcnow()
    if display_name is not None:
        user.display_name = display_name
    session.flush()
    if disabling:
        tree_manager.halt_lottery_prompts_of_user(session, user.id, cfg)
    return user


def mark_user_deleted(session: Session, user_id: uuid.UUID) -> User:
    """Anonymise a user: their rows stay, their name and identity go."""
    user = _user_by_id(session, user_id)
    user.deleted = True
    user.display_name = DELETED_USER_DISPLAY_NAME
    # keeps (api_client_id, username, auth_method) unique and frees the old username
    user.username = f"{DELETED_USER_ID_PREFIX}{user.id}"
    user.show_on_leaderboard = False
    session.flush()
    return user


def upsert_frontend_user(
    session: Session,
    client: ApiClient,
    request: wire.CreateFrontendUserRequest,
    *,
    cfg: TreeManagerConfiguration,
) -> User:
    """Create the caller's user on first sight; changing enabled/notes/leaderboard needs a trusted client.

    Accepting the terms of service is allowed for any client (untrusted frontends must be able to
    onboard their users).
    """
    user = clients_service.get_or_create_user(session, client, request)

    def changed(wanted: object, current: object) -> bool:
        return wanted is not None and wanted != current

    moderating = (
        changed(request.enabled, user.enabled)
        or changed(request.show_on_leaderboard, user.show_on_leaderboard)
        or changed(request.notes, user.notes)
    )
    if moderating:
        clients_service.require_trusted(client)
    accept_tos = bool(request.tos_acceptance) and user.tos_acceptance_date is None
    if moderating or accept_tos:
        update_user(
            session,
            user,
            cfg=cfg,
            enabled=request.enabled,
            notes=request.notes,
            show_on_leaderboard=request.show_on_leaderboard,
            tos_acceptance=accept_tos,
        )
    return user


# --- a user's messages ----------------------------------------------------------------------------


def delete_user_messages(session: Session, user_id: uuid.UUID, *, cfg: TreeManagerConfiguration) -> int:
    """Soft-delete everything a user wrote (and the replies below it), then recheck the trees touched.

    Returns how many messages were newly marked deleted.
    """
    _user_by_id(session, user_id)
    session.flush()
    own = session.execute(
        select(Message.id, Message.message_tree_id).where(
            Message.user_id == user_id, Message.deleted.is_(False)
        )
    ).all()
    tree_ids = sorted({tree_id for _, tree_id in own})
    for tree_id in tree_ids:
        lock_tree(session, tree_id)
    changed = 0
    for message_id, _ in own:
        message = session.get(Message, message_id)
        if message is not None and not message.deleted:
            changed += tree_manager.soft_delete_subtree(session, message)
    for tree_id in tree_ids:
        moderation.update_children_counts(session, tree_id)
        tree_manager.recheck_tree(session, tree_id, cfg)
    return changed


# --- merging users --------------------------------------------------------------------------------


def _merge_emojis(session: Session, destination: uuid.UUID, sources: list[uuid.UUID]) -> None:
    """Keep one emoji per (message, emoji) for the merged user, and at most one of +1/-1 per message;
    each dropped row takes one off the message's count. The destination's own rows win."""
    rows = session.execute(
        select(MessageEmoji.message_id, MessageEmoji.user_id, MessageEmoji.emoji)
        .where(MessageEmoji.user_id.in_([destination, *sources]))
        .order_by(MessageEmoji.created_date)
    ).all()
    order = {destination: 0} | {s: i + 1 for i, s in enumerate(sources)}
    kept: set[tuple[uuid.UUID, str]] = set()
    for row in sorted(rows, key=lambda r: order[r.user_id]):
        slot = (row.message_id, "vote" if row.emoji in ("+1", "-1") else row.emoji)
        if slot not in kept:
            kept.add(slot)
            continue
        session.execute(
            delete(MessageEmoji).where(
                MessageEmoji.message_id == row.message_id,
                MessageEmoji.user_id == row.user_id,
                MessageEmoji.emoji == row.emoji,
            ),
            execution_options={"synchronize_session": False},
        )
        message = session.get(Message, row.message_id)
        if message is not None:
            counts = dict(message.emojis or {})
            counts[row.emoji] = counts.get(row.emoji, 0) - 1
            message.emojis = {k: v for k, v in counts.items() if v > 0}  # a new dict: the column is written


def _merge_ballots(session: Session, destination: uuid.UUID, sources: list[uuid.UUID]) -> None:
    """Ballots are keyed by (task, user). A task belongs to one user, so two merged users can only share
    one through a collective task; then the destination's (or the first source's) ballot is kept."""
    rows = session.execute(
        select(MessageReaction.task_id, MessageReaction.user_id).where(
            MessageReaction.user_id.in_([destination, *sources])
        )
    ).all()
    seen: set[uuid.UUID] = set()
    for task_id, user_id in sorted(rows, key=lambda r: r.user_id != destination):
        if task_id in seen:
            session.execute(
                delete(MessageReaction).where(
                    MessageReaction.task_id == task_id, MessageReaction.user_id == user_id
                ),
                execution_options={"synchronize_session": False},
            )
        seen.add(task_id)


def merge_users(
    session: Session, *, destination_user_id: uuid.UUID, source_user_ids: Sequence[uuid.UUID]
) -> int:
    """Move everything the source users did to the destination user, then delete the sources.

    Their leaderboard rows are dropped (the next recompute credits the destination). Returns how many
    users were merged in.
    """
    sources = [i for i in dict.fromkeys(source_user_ids) if i != destination_user_id]
    _user_by_id(session, destination_user_id)
    found = set(session.scalars(select(User.id).where(User.id.in_(sources)))) if sources else set()
    if len(found) != len(sources):
        raise OasstError(
            f"User not found: {', '.join(str(s) for s in sources if s not in found)}.",
            ErrorCode.USER_NOT_FOUND,
            HTTPStatus.NOT_FOUND,
        )
    if not sources:
        return 0
    session.flush()
    _merge_emojis(session, destination_user_id, sources)
    _merge_ballots(session, destination_user_id, sources)
    session.flush()
    for model in (Message, MessageRevision, MessageReaction, MessageEmoji, TextLabels, Task, Journal):
        session.execute(
            update(model).where(model.user_id.in_(sources)).values(user_id=destination_user_id),
            execution_options={"synchronize_session": False},
        )
    for stats in (UserStats, TrollStats):
        session.execute(
            delete(stats).where(stats.user_id.in_(sources)), execution_options={"synchronize_session": False}
        )
    session.execute(
        delete(User).where(User.id.in_(sources)), execution_options={"synchronize_session": False}
    )
    session.expire_all()
    return len(sources)
