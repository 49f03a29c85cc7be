"""Administration: API clients, the backend's settings, purges, user merges and the flagged-message queue.

Purges are hard deletes (the original's ``purge_user`` / ``purge_user_messages``): a user's own trees go
whole, and under each of their replies in other people's trees the whole subtree goes. Everything that
points at a removed message goes with it (labels, emojis, ranking ballots that ranked it, tasks, journal,
revisions, the flag), and the survivors' denormalised counts (``children_count``, ``ranking_count``,
``review_count``, ``emojis``) are corrected before the tree manager re-checks every tree that lost
messages. A preview runs the same work inside a savepoint and rolls it back, so it reports exactly what
the real purge would do.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import case, delete, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from oasst.backend.db import lock_tree
from oasst.backend.errors import ErrorCode, OasstError
from oasst.backend.models import (
    ApiClient,
    FlaggedMessage,
    Journal,
    Message,
    MessageEmoji,
    MessageReaction,
    MessageRevision,
    MessageTreeState,
    Task,
    TextLabels,
    TrollStats,
    User,
    UserStats,
)
from oasst.backend.services import moderation, tree_manager
from oasst.backend.services.system_stats import get_system_stats
from oasst.backend.services.users import Keyset, parse_cursor_date
from oasst.backend.settings import Settings, TreeManagerConfiguration
from oasst.protocol.admin import (
    ApiClientResponse,
    FlaggedMessagePage,
    FlaggedMessageResponse,
    PublicSettings,
    PurgeCounts,
    PurgeResult,
)

RANKING_PAYLOAD = "RankingReactionPayload"
MASK = "**********"
_SECRET_NAME = re.compile(r"secret|token|password|passwd|api_key|apikey|private|credential", re.IGNORECASE)
_CHUNK = 500


def _user_not_found(user_id: uuid.UUID) -> OasstError:
    return OasstError(f"User {user_id} not found.", ErrorCode.USER_NOT_FOUND, HTTPStatus.NOT_FOUND)


def _delete_in(session: Session, column: InstrumentedAttribute[Any], ids: Iterable[uuid.UUID]) -> int:
    """DELETE the rows of ``column``'s table whose ``column`` is in ``ids``; returns the row count."""
    removed, unique = 0, list(dict.fromkeys(ids))
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        result = session.execute(
            delete(column.class_).where(column.in_(chunk)), execution_options={"synchronize_session": False}
        )
        removed += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return removed


# --- API clients ----------------------------------------------------------------------------------


def list_api_clients(session: Session) -> list[ApiClientResponse]:
    """Every API client, oldest first (keys are never shown: only their hashes are stored)."""
    clients = session.scalars(select(ApiClient).order_by(ApiClient.created_date, ApiClient.id))
    return [ApiClientResponse.model_validate(c) for c in clients]


def set_api_client_enabled(session: Session, client_id: uuid.UUID, *, enabled: bool) -> ApiClientResponse:
    client = session.get(ApiClient, client_id)
    if client is None:
        raise OasstError(
            f"API client {client_id} not found.", ErrorCode.API_CLIENT_NOT_FOUND, HTTPStatus.NOT_FOUND
        )
    client.enabled = enabled
    session.flush()
    return ApiClientResponse.model_validate(client)


# --- settings -------------------------------------------------------------------------------------


def public_settings(settings: Settings) -> PublicSettings:
    """What any API client may know: limits and the tree manager's configuration."""
    return PublicSettings(
        message_size_limit=settings.message_size_limit,
        task_validity_minutes=settings.task_validity_minutes,
        enforce_tos_acceptance=settings.enforce_tos_acceptance,
        allow_self_labeling=settings.allow_self_labeling,
        allow_self_ranking=settings.allow_self_ranking,
        tree_manager=settings.tree_manager.model_dump(mode="json"),
        rate_limits=settings.rate_limits.model_dump(mode="json"),
        stats_intervals=settings.stats_intervals.model_dump(mode="json"),
    )


def _mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo.partition(':')[0]}:{MASK}@{host}"))


def _masked(value: Any, name: str = "") -> Any:
    if isinstance(value, dict):
        return {key: _masked(item, key) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item, name) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    if _SECRET_NAME.search(name):
        return MASK
    if isinstance(value, str) and "://" in value:
        return _mask_url(value)
    return value


def full_settings(settings: Settings) -> dict[str, Any]:
    """Every setting, with secrets masked: passwords in URLs, tokens, keys (the original leaked them)."""
    return _masked(settings.model_dump(mode="json"))


# --- purges ---------------------------------------------------------------------------------------


def _ranked_ids(payload: Any) -> set[str] | None:
    """The message ids a ranking ballot ranked (flat or wrapped in ``payload``), or None if unreadable."""
    if isinstance(payload, dict):
        ids = payload.get("ranked_message_ids")
        if ids is None and isinstance(payload.get("payload"), dict):
            ids = payload["payload"].get("ranked_message_ids")
        if isinstance(ids, list):
            return {str(i) for i in ids}
    return None


def _decrement(session: Session, column: InstrumentedAttribute[int], amounts: Counter[uuid.UUID]) -> None:
    for message_id, amount in amounts.items():
        session.execute(
            update(Message)
            .where(Message.id == message_id)
            .values({column.key: case((column > amount, column - amount), else_=0)}),
            execution_options={"synchronize_session": False},
        )


def _drop_ballots(
    session: Session, ballots: Sequence[MessageReaction], counts: PurgeCounts, *, doomed: set[str]
) -> None:
    """Delete ranking ballots; the surviving messages they ranked lose one ranking each."""
    lost: Counter[uuid.UUID] = Counter()
    for ballot in ballots:
        for message_id in _ranked_ids(ballot.payload) or set():
            if message_id not in doomed:
                lost[uuid.UUID(message_id)] += 1
        session.execute(
            delete(MessageReaction).where(
                MessageReaction.task_id == ballot.task_id, MessageReaction.user_id == ballot.user_id
            ),
            execution_options={"synchronize_session": False},
        )
    counts.reactions += len(ballots)
    _decrement(session, Message.ranking_count, lost)


def _purge_messages(
    session: Session, rows: Sequence[Any], counts: PurgeCounts, *, tree_id: uuid.UUID | None = None
) -> None:
    """Hard-delete ``rows`` (id, parent_id, depth, task_id; closed under descendants) and what hangs on
    them; ``tree_id`` marks a whole-tree purge (its state row and tasks go too)."""
    ids = [r.id for r in rows]
    doomed = {str(i) for i in ids}
    survivors = {r.parent_id for r in rows if r.parent_id is not None and str(r.parent_id) not in doomed}
    if survivors:
        ballots = session.scalars(
            select(MessageReaction).where(
                MessageReaction.message_id.in_(survivors), MessageReaction.payload_type == RANKING_PAYLOAD
            )
        ).all()
        hit = [b for b in ballots if (ranked := _ranked_ids(b.payload)) is None or ranked & doomed]
        _drop_ballots(session, hit, counts, doomed=doomed)
    counts.reactions += _delete_in(session, MessageReaction.message_id, ids)
    counts.labels += _delete_in(session, TextLabels.message_id, ids)
    counts.emojis += _delete_in(session, MessageEmoji.message_id, ids)
    counts.flagged += _delete_in(session, FlaggedMessage.message_id, ids)
    counts.revisions += _delete_in(session, MessageRevision.message_id, ids)
    counts.journal += _delete_in(session, Journal.message_id, ids)
    counts.tasks += _delete_in(session, Task.id, [r.task_id for r in rows if r.task_id is not None])
    counts.tasks += _delete_in(session, Task.parent_message_id, ids)
    if tree_id is not None:
        counts.tasks += _delete_in(session, Task.message_tree_id, [tree_id])
        _delete_in(session, MessageTreeState.message_tree_id, [tree_id])
        counts.trees += 1
    for depth in sorted({r.depth for r in rows}, reverse=True):  # children before their parents
        counts.messages += _delete_in(session, Message.id, [r.id for r in rows if r.depth == depth])


def _tree_rows(session: Session, tree_id: uuid.UUID) -> Sequence[Any]:
    return session.execute(
        select(Message.id, Message.parent_id, Message.depth, Message.task_id).where(
            Message.message_tree_id == tree_id
        )
    ).all()


def _subtrees(rows: Sequence[Any], roots: set[uuid.UUID]) -> list[Any]:
    children: dict[uuid.UUID, list[Any]] = {}
    for row in rows:
        if row.parent_id is not None:
            children.setdefault(row.parent_id, []).append(row)
    found = [r for r in rows if r.id in roots]
    stack = list(found)
    while stack:
        kids = children.get(stack.pop().id, [])
        found.extend(kids)
        stack.extend(kids)
    return found


def _purge_user_messages(
    session: Session,
    user_id: uuid.UUID,
    counts: PurgeCounts,
    *,
    purge_initial_prompts: bool,
    min_date: datetime | None = None,
    max_date: datetime | None = None,
) -> set[uuid.UUID]:
    """Remove the user's trees (if asked) and the subtrees under their replies; returns the trees left."""
    stmt = select(Message.id, Message.message_tree_id, Message.parent_id).where(Message.user_id == user_id)
    if min_date is not None:
        stmt = stmt.where(Message.created_date >= min_date)
    if max_date is not None:
        stmt = stmt.where(Message.created_date <= max_date)
    replies: dict[uuid.UUID, set[uuid.UUID]] = {}
    prompts: set[uuid.UUID] = set()
    for message_id, tree_id, parent_id in session.execute(stmt):
        if parent_id is None:
            prompts.add(tree_id)
        else:
            replies.setdefault(tree_id, set()).add(message_id)
    if purge_initial_prompts:
        for tree_id in sorted(prompts):
            lock_tree(session, tree_id)
            _purge_messages(session, _tree_rows(session, tree_id), counts, tree_id=tree_id)
            replies.pop(tree_id, None)
    for tree_id in sorted(replies):
        lock_tree(session, tree_id)
        _purge_messages(session, _subtrees(_tree_rows(session, tree_id), replies[tree_id]), counts)
    return set(replies)


def _purge_user_rows(session: Session, user_id: uuid.UUID, counts: PurgeCounts) -> set[uuid.UUID]:
    """Remove what the user did to other people's messages; returns the trees whose counts changed."""
    ballots = session.scalars(select(MessageReaction).where(MessageReaction.user_id == user_id)).all()
    _drop_ballots(session, [b for b in ballots if b.payload_type == RANKING_PAYLOAD], counts, doomed=set())
    counts.reactions += _delete_in(session, MessageReaction.user_id, [user_id])
    emojis = session.execute(
        select(MessageEmoji.message_id, MessageEmoji.emoji).where(MessageEmoji.user_id == user_id)
    ).all()
    touched = {message_id for message_id, _ in emojis}
    for message in session.scalars(select(Message).where(Message.id.in_(touched))) if touched else ():
        mine = Counter(emoji for message_id, emoji in emojis if message_id == message.id)
        left = {k: v - mine[k] for k, v in (message.emojis or {}).items() if v - mine[k] > 0}
        message.emojis = left  # a new dict, so the JSON column is written
    counts.emojis += _delete_in(session, MessageEmoji.user_id, [user_id])
    reviews = Counter(
        session.scalars(
            select(TextLabels.message_id).where(
                TextLabels.user_id == user_id, TextLabels.task_id.is_not(None)
            )
        )
    )
    _decrement(session, Message.review_count, reviews)
    counts.labels += _delete_in(session, TextLabels.user_id, [user_id])
    counts.tasks += _delete_in(session, Task.user_id, [user_id])
    counts.journal += _delete_in(session, Journal.user_id, [user_id])
    counts.stats += _delete_in(session, UserStats.user_id, [user_id])
    counts.stats += _delete_in(session, TrollStats.user_id, [user_id])
    changed = (
        touched | set(reviews) | {uuid.UUID(i) for b in ballots for i in _ranked_ids(b.payload) or set()}
    )
    if not changed:
        return set()
    return set(session.scalars(select(Message.message_tree_id).where(Message.id.in_(changed)).distinct()))


def _run_purge(
    session: Session,
    user_id: uuid.UUID,
    cfg: TreeManagerConfiguration,
    *,
    preview: bool,
    work: Callable[[PurgeCounts], set[uuid.UUID]],
) -> PurgeResult:
    """Run ``work`` in a savepoint between two stat snapshots; roll it back for a preview."""
    if session.get(User, user_id) is None:
        raise _user_not_found(user_id)
    started = time.perf_counter()
    session.flush()
    before = get_system_stats(session)
    savepoint = session.begin_nested()
    counts = PurgeCounts()
    trees = work(counts)
    session.flush()
    session.expire_all()
    remaining = [t for t in sorted(trees) if session.get(MessageTreeState, t) is not None]
    for tree_id in remaining:
        moderation.update_children_counts(session, tree_id)
        tree_manager.recheck_tree(session, tree_id, cfg)
    counts.affected_trees = len(remaining)
    session.flush()
    after = get_system_stats(session)
    if preview:
        savepoint.rollback()
    else:
        savepoint.commit()
    session.expire_all()
    duration = time.perf_counter() - started
    return PurgeResult(before=before, after=after, preview=preview, duration=duration, counts=counts)


def purge_user_messages(
    session: Session,
    user_id: uuid.UUID,
    *,
    cfg: TreeManagerConfiguration,
    purge_initial_prompts: bool = False,
    min_date: datetime | None = None,
    max_date: datetime | None = None,
    preview: bool = True,
) -> PurgeResult:
    """Hard-delete the user's replies (with everything below them) written in ``[min_date, max_date]``,
    and with ``purge_initial_prompts`` their whole trees too."""

    def work(counts: PurgeCounts) -> set[uuid.UUID]:
        return _purge_user_messages(
            session,
            user_id,
            counts,
            purge_initial_prompts=purge_initial_prompts,
            min_date=min_date,
            max_date=max_date,
        )

    return _run_purge(session, user_id, cfg, preview=preview, work=work)


def purge_user(
    session: Session,
    user_id: uuid.UUID,
    *,
    cfg: TreeManagerConfiguration,
    ban: bool = True,
    preview: bool = True,
) -> PurgeResult:
    """Remove every trace of the user's work; with ``ban`` the user is also disabled and marked deleted."""

    def work(counts: PurgeCounts) -> set[uuid.UUID]:
        trees = _purge_user_messages(session, user_id, counts, purge_initial_prompts=True)
        trees |= _purge_user_rows(session, user_id, counts)
        if ban:
            session.execute(
                update(User).where(User.id == user_id).values(deleted=True, enabled=False),
                execution_options={"synchronize_session": False},
            )
        return trees

    return _run_purge(session, user_id, cfg, preview=preview, work=work)


# --- the flagged-message queue ----------------------------------------------------------------------


def list_flagged_messages(
    session: Session, *, max_count: int | None = 100, processed: bool | None = None
) -> list[FlaggedMessageResponse]:
    """Flagged messages, oldest flag first (``processed`` narrows to done or open ones)."""
    stmt = select(FlaggedMessage).order_by(FlaggedMessage.created_date, FlaggedMessage.message_id)
    if processed is not None:
        stmt = stmt.where(FlaggedMessage.processed.is_(processed))
    if max_count is not None:
        stmt = stmt.limit(max_count)
    return [FlaggedMessageResponse.model_validate(f) for f in session.scalars(stmt)]


def flagged_messages_page(
    session: Session,
    *,
    before: str | None = None,
    after: str | None = None,
    max_count: int = 10,
    desc: bool = False,
    processed: bool | None = None,
) -> FlaggedMessagePage:
    """One keyset page of the queue; cursors are ``"<message_id>$<iso created_date>"``."""
    keyset = Keyset.of(
        before=before, after=after, desc=desc, max_count=max_count, parse_key=parse_cursor_date
    )
    key, id_ = FlaggedMessage.created_date, FlaggedMessage.message_id
    stmt = select(FlaggedMessage).where(*keyset.where(key, id_))
    if processed is not None:
        stmt = stmt.where(FlaggedMessage.processed.is_(processed))
    rows = session.scalars(stmt.order_by(*keyset.order_by(key, id_)).limit(keyset.limit)).all()
    items, prev, next_ = keyset.finish(rows, lambda f: f"{f.message_id}${f.created_date.isoformat()}")
    return FlaggedMessagePage(
        prev=prev,
        next=next_,
        sort_key="created_date",
        order="desc" if desc else "asc",
        items=[FlaggedMessageResponse.model_validate(f) for f in items],
    )


def process_flagged_message(session: Session, message_id: uuid.UUID) -> FlaggedMessageResponse:
    """Mark a flagged message as handled by a moderator (a new red flag re-opens it)."""
    flag = session.get(FlaggedMessage, message_id)
    if flag is None:
        raise OasstError(
            f"Message {message_id} is not in the flagged-message queue.",
            ErrorCode.MESSAGE_NOT_FOUND,
            HTTPStatus.NOT_FOUND,
        )
    flag.processed = True
    session.flush()
    return FlaggedMessageResponse.model_validate(flag)
