"""System-wide counts: messages (``/stats/``), tree states and sizes (``/stats/tree_manager``), and the
dashboard's cached stats (``/stats/cached``), which a background job recomputes.

Cached stats, stored one row per name in ``cached_stats``:

* ``human_messages_by_lang`` / ``human_messages_by_role``: accepted, non-deleted, non-synthetic messages;
* ``message_trees_by_state``: trees per state;
* ``message_trees_states_by_lang``: ``[{lang, state, count}]`` ordered by lang, state;
* ``users_accepted_tos``: ``{"count": n}`` of enabled users who accepted the terms of service (deleted
  users are not counted; the original counted them).
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from oasst.backend.db import lock_named
from oasst.backend.errors import ErrorCode, OasstError
from oasst.backend.models import CachedStats, Message, MessageTreeState, User, utcnow
from oasst.protocol.stats import (
    AllCachedStatsResponse,
    CachedStatsName,
    CachedStatsResponse,
    SystemStats,
    TreeManagerStats,
    TreeMessageCountStats,
)

__all__ = [
    "get_all_cached_stats",
    "get_cached_stats",
    "get_system_stats",
    "tree_manager_stats",
    "tree_message_counts",
    "tree_state_counts",
    "update_cached_stats",
]

CACHED_STATS_LOCK = "oasst.cached_stats"


def get_system_stats(session: Session) -> SystemStats:
    """Messages in total, active (not deleted) overall and per language, deleted, and trees (roots)."""
    by_lang = session.execute(
        select(Message.lang, Message.deleted, func.count()).group_by(Message.lang, Message.deleted)
    ).all()
    trees = session.scalar(select(func.count()).select_from(Message).where(Message.parent_id.is_(None)))
    active_by_lang = {lang: n for lang, deleted, n in by_lang if not deleted}
    deleted = sum(n for _, is_deleted, n in by_lang if is_deleted)
    active = sum(active_by_lang.values())
    return SystemStats(
        all=active + deleted,
        active=active,
        active_by_lang=active_by_lang,
        deleted=deleted,
        message_trees=trees or 0,
    )


def tree_state_counts(
    session: Session, *, lang: str | None = None, only_active: bool = False
) -> dict[str, int]:
    """Trees per lifecycle state (optionally of one language or only active trees)."""
    stmt = select(MessageTreeState.state, func.count()).group_by(MessageTreeState.state)
    if lang is not None:
        stmt = stmt.where(MessageTreeState.lang == lang)
    if only_active:
        stmt = stmt.where(MessageTreeState.active.is_(True))
    return {state: n for state, n in session.execute(stmt).all()}


def tree_message_counts(session: Session, *, only_active: bool = True) -> list[TreeMessageCountStats]:
    """Per tree: state, deepest message, oldest/youngest message date and non-deleted message count."""
    stmt = (
        select(
            MessageTreeState.message_tree_id,
            MessageTreeState.state,
            MessageTreeState.goal_tree_size,
            func.max(Message.depth).label("depth"),
            func.min(Message.created_date).label("oldest"),
            func.max(Message.created_date).label("youngest"),
            func.count(Message.id).label("count"),
        )
        .select_from(MessageTreeState)
        .join(Message, Message.message_tree_id == MessageTreeState.message_tree_id)
        .where(Message.deleted.is_(False))
        .group_by(MessageTreeState.message_tree_id, MessageTreeState.state, MessageTreeState.goal_tree_size)
        .order_by(MessageTreeState.message_tree_id)
    )
    if only_active:
        stmt = stmt.where(MessageTreeState.active.is_(True))
    return [TreeMessageCountStats.model_validate(dict(row)) for row in session.execute(stmt).mappings()]


def tree_manager_stats(session: Session) -> TreeManagerStats:
    return TreeManagerStats(
        state_counts=tree_state_counts(session), message_counts=tree_message_counts(session, only_active=True)
    )


# ---------------------------------------------------------------------------------------------- cached


def _human_messages_by(session: Session, column: Any) -> dict[str, int]:
    stmt = (
        select(column, func.count())
        .where(Message.deleted.is_(False), Message.review_result.is_(True), Message.synthetic.is_(False))
        .group_by(column)
    )
    return {key: n for key, n in session.execute(stmt).all()}


def _message_trees_states_by_lang(session: Session) -> list[dict[str, Any]]:
    stmt = (
        select(Message.lang, MessageTreeState.state, func.count().label("count"))
        .select_from(MessageTreeState)
        .join(Message, Message.id == MessageTreeState.message_tree_id)
        .group_by(Message.lang, MessageTreeState.state)
        .order_by(Message.lang, MessageTreeState.state)
    )
    return [dict(row) for row in session.execute(stmt).mappings()]


def _users_accepted_tos(session: Session) -> dict[str, int]:
    stmt = select(func.count()).where(
        User.enabled.is_(True), User.deleted.is_(False), User.tos_acceptance_date.is_not(None)
    )
    return {"count": session.scalar(stmt) or 0}


CACHED_STATS: dict[CachedStatsName, Callable[[Session], Any]] = {
    CachedStatsName.human_messages_by_lang: lambda s: _human_messages_by(s, Message.lang),
    CachedStatsName.human_messages_by_role: lambda s: _human_messages_by(s, Message.role),
    CachedStatsName.message_trees_by_state: tree_state_counts,
    CachedStatsName.message_trees_states_by_lang: _message_trees_states_by_lang,
    CachedStatsName.users_accepted_tos: _users_accepted_tos,
}


def update_cached_stats(session: Session) -> None:
    """Recompute every cached stat in the caller's transaction (one writer at a time)."""
    lock_named(session, CACHED_STATS_LOCK)
    now = utcnow()
    for name, compute in CACHED_STATS.items():
        value = compute(session)
        row = session.get(CachedStats, name.value)
        if row is None:
            session.add(CachedStats(name=name.value, modified_date=now, stats=value))
        else:
            row.modified_date = now
            row.stats = value
    session.flush()


def _response(row: CachedStats) -> CachedStatsResponse:
    return CachedStatsResponse(name=row.name, last_updated=row.modified_date, stats=row.stats)


def get_cached_stats(session: Session, name: CachedStatsName) -> CachedStatsResponse:
    row = session.get(CachedStats, name.value)
    if row is None:
        raise OasstError(
            f"Cached stats '{name.value}' are not available yet: they are computed in the background "
            "(or by POST /api/v1/stats/cached/update).",
            ErrorCode.CACHED_STATS_NOT_AVAILABLE,
            HTTPStatus.NOT_FOUND,
        )
    return _response(row)


def get_all_cached_stats(session: Session) -> AllCachedStatsResponse:
    rows = session.scalars(select(CachedStats).order_by(CachedStats.name))
    return AllCachedStatsResponse(stats_by_name={row.name: _response(row) for row in rows})
