"""The dispenser's candidate queries: what a user may work on next, in one language.

Every query applies the original's exclusions (no self-review or self-ranking, no repeats, skipped
items hidden, depth and children limits, one prompter reply under an assistant message) plus
reservations the original lacked: open tasks count against the remaining reviews, rankings, replies
and tree size, so concurrent volunteers are not all sent to the same last slot.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Integer, String, Uuid, and_, bindparam, exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from oasst.backend.models import (
    Message,
    MessageEmoji,
    MessageReaction,
    MessageTreeState,
    Task,
    TextLabels,
    TreeState,
)
from oasst.backend.models.base import UTCDateTime
from oasst.backend.services.tree_manager import RANKING_PAYLOAD, ranked_roles
from oasst.backend.settings import TreeManagerConfiguration

LABEL_TASK_TYPES = ("label_initial_prompt", "label_prompter_reply", "label_assistant_reply")
REPLY_TASK_TYPES = ("prompter_reply", "assistant_reply")
RANK_TASK_TYPES = ("rank_prompter_replies", "rank_assistant_replies")
CANDIDATE_LIMIT = 200


@dataclass(frozen=True)
class Scope:
    """Who asks, in which language, and the cut-off of "recent" open tasks."""

    user_id: uuid.UUID
    lang: str
    recent_since: datetime


# Statements are built once per shape with bind parameters and reused: building these expressions
# (subqueries, aliases) costs far more CPU than running them. They run on the session's connection
# directly (Core), skipping the ORM's per-statement machinery, since they return plain rows.
USER = bindparam("user_id", type_=Uuid())
LANG = bindparam("lang", type_=String())
SINCE = bindparam("since", type_=UTCDateTime())


def counts_in_tree(message: Any = Message) -> ColumnElement[bool]:
    """A message that counts toward its tree: not deleted and not rejected by review (or not reviewed yet)."""
    return and_(
        message.deleted.is_(False), or_(message.review_result.is_(None), message.review_result.is_(True))
    )


def open_reply_task(task: Any = Task, since: Any = SINCE) -> ColumnElement[bool]:
    """A reply task someone may still be writing (not done, not skipped, not expired)."""
    return and_(
        task.task_type.in_(REPLY_TASK_TYPES),
        task.done.is_(False),
        task.skipped.is_(False),
        task.created_date >= since,
    )


REQUIRED = bindparam("required", type_=Integer())
LIMIT = bindparam("limit", type_=Integer())
IDS = bindparam("ids", expanding=True, type_=Uuid())


def _params(scope: Scope, **extra: object) -> dict[str, object]:
    return {"user_id": scope.user_id, "lang": scope.lang, "since": scope.recent_since, **extra}


def _open_tasks(target: Any, types: tuple[str, ...]) -> Any:
    return (
        select(func.count())
        .where(
            Task.parent_message_id == target,
            Task.task_type.in_(types),
            Task.done.is_(False),
            Task.skipped.is_(False),
            Task.created_date >= SINCE,
        )
        .scalar_subquery()
    )


def _user_has_open_task(target: Any, types: tuple[str, ...]) -> Any:
    return exists().where(
        Task.parent_message_id == target,
        Task.task_type.in_(types),
        Task.user_id == USER,
        Task.done.is_(False),
        Task.skipped.is_(False),
        Task.created_date >= SINCE,
    )


def _skipped(target: Any, emoji: str) -> Any:
    return exists().where(
        MessageEmoji.message_id == target, MessageEmoji.user_id == USER, MessageEmoji.emoji == emoji
    )


@dataclass(frozen=True)
class ReviewCandidate:
    message_id: uuid.UUID
    tree_id: uuid.UUID
    role: str


def messages_needing_review(
    session: Session,
    scope: Scope,
    cfg: TreeManagerConfiguration,
    *,
    roots: bool,
    message_ids: list[uuid.UUID] | None = None,
    limit: int = CANDIDATE_LIMIT,
) -> list[ReviewCandidate]:
    """Prompts in review (``roots``) or replies of growing trees that this user may label."""
    required = cfg.num_reviews_initial_prompt if roots else cfg.num_reviews_reply
    stmt = _review_stmt(roots, message_ids is not None)
    params = _params(scope, required=required, limit=limit)
    if message_ids is not None:
        params["ids"] = message_ids
    return [ReviewCandidate(m, t, role) for m, t, role in session.connection().execute(stmt, params).all()]


@functools.cache
def _review_stmt(roots: bool, by_ids: bool) -> Any:
    state = TreeState.INITIAL_PROMPT_REVIEW if roots else TreeState.GROWING
    join_on = (
        (MessageTreeState.message_tree_id == Message.id)
        if roots
        else (MessageTreeState.message_tree_id == Message.message_tree_id)
    )
    stmt = (
        select(Message.id, Message.message_tree_id, Message.role)
        .join(MessageTreeState, join_on)
        .where(
            MessageTreeState.state == state.value,
            MessageTreeState.active.is_(True),
            Message.parent_id.is_(None) if roots else Message.parent_id.is_not(None),
            Message.lang == LANG,
            Message.deleted.is_(False),
            Message.review_result.is_(None),
            Message.review_count + _open_tasks(Message.id, LABEL_TASK_TYPES) < REQUIRED,
            or_(Message.user_id.is_(None), Message.user_id != USER),
            ~_skipped(Message.id, "_skip_labeling"),
            ~exists().where(
                TextLabels.message_id == Message.id,
                TextLabels.user_id == USER,
                TextLabels.task_id.is_not(None),
            ),
            ~_user_has_open_task(Message.id, LABEL_TASK_TYPES),
        )
        .limit(LIMIT)
    )
    return stmt.where(Message.id.in_(IDS)) if by_ids else stmt


@dataclass(frozen=True)
class ReplyCandidate:
    parent_id: uuid.UUID
    tree_id: uuid.UUID
    role: str
    active_children: int


def tree_room(session: Session, scope: Scope) -> dict[uuid.UUID, int]:
    """Growing trees of the language -> messages they may still take (goal - valid - open reply tasks)."""
    return {
        tree_id: int(room)
        for tree_id, room in session.connection().execute(_room_stmt(), _params(scope)).all()
    }


@functools.cache
def _room_stmt() -> Any:
    valid = (
        select(func.count())
        .where(
            Message.message_tree_id == MessageTreeState.message_tree_id,
            counts_in_tree(Message),
        )
        .scalar_subquery()
    )
    reserved = (
        select(func.count())
        .where(
            Task.message_tree_id == MessageTreeState.message_tree_id,
            open_reply_task(Task, SINCE),
        )
        .scalar_subquery()
    )
    return select(MessageTreeState.message_tree_id, MessageTreeState.goal_tree_size - valid - reserved).where(
        MessageTreeState.state == TreeState.GROWING.value,
        MessageTreeState.active.is_(True),
        MessageTreeState.lang == LANG,
    )


def extendible_parents(
    session: Session,
    scope: Scope,
    cfg: TreeManagerConfiguration,
    *,
    parent_ids: list[uuid.UUID] | None = None,
    limit: int = CANDIDATE_LIMIT,
) -> list[ReplyCandidate]:
    """Accepted messages of growing trees that may take one more reply from this user."""
    rooms = [t for t, r in tree_room(session, scope).items() if r > 0]
    if not rooms:
        return []
    params = _params(scope, limit=limit, trees=rooms, prompter_replies=cfg.num_prompter_replies)
    if parent_ids is not None:
        params["ids"] = parent_ids
    rows = session.connection().execute(_extendible_stmt(parent_ids is not None), params).all()
    return [ReplyCandidate(p, t, role, int(n)) for p, t, role, n in rows]


@functools.cache
def _extendible_stmt(by_ids: bool) -> Any:
    child = aliased(Message)
    active_children = (
        select(func.count())
        .where(
            child.parent_id == Message.id,
            counts_in_tree(child),
        )
        .scalar_subquery()
    )
    stmt = (
        select(Message.id, Message.message_tree_id, Message.role, active_children)
        .join(MessageTreeState, MessageTreeState.message_tree_id == Message.message_tree_id)
        .where(
            Message.message_tree_id.in_(bindparam("trees", expanding=True, type_=Uuid())),
            Message.lang == LANG,
            Message.deleted.is_(False),
            Message.review_result.is_(True),
            Message.depth < MessageTreeState.max_depth,
            active_children < MessageTreeState.max_children_count,
            or_(Message.role == "prompter", active_children < bindparam("prompter_replies", type_=Integer())),
            ~exists().where(child.parent_id == Message.id, child.user_id == USER, child.deleted.is_(False)),
            ~_skipped(Message.id, "_skip_reply"),
            # the soft lock: nobody else is writing a reply to this parent right now
            _open_tasks(Message.id, REPLY_TASK_TYPES) == 0,
        )
        .limit(LIMIT)
    )
    return stmt.where(Message.id.in_(IDS)) if by_ids else stmt


@dataclass(frozen=True)
class RankingCandidate:
    parent_id: uuid.UUID
    tree_id: uuid.UUID
    parent_role: str


def incomplete_rankings(
    session: Session,
    scope: Scope,
    cfg: TreeManagerConfiguration,
    *,
    parent_ids: list[uuid.UUID] | None = None,
    limit: int = CANDIDATE_LIMIT,
) -> list[RankingCandidate]:
    """Parents in ranking trees whose replies still need rankings, none of them by this user."""
    params = _params(scope, limit=limit, required=cfg.num_required_rankings)
    if parent_ids is not None:
        params["ids"] = parent_ids
    rows = (
        session.connection().execute(_rankings_stmt(ranked_roles(cfg), parent_ids is not None), params).all()
    )
    return [RankingCandidate(p, t, role) for p, t, role in rows]


@functools.cache
def _rankings_stmt(roles: tuple[str, ...], by_ids: bool) -> Any:
    child = aliased(Message)
    own = func.count().filter(child.user_id == USER)
    grouped = (
        select(child.parent_id.label("parent_id"))
        .join(MessageTreeState, MessageTreeState.message_tree_id == child.message_tree_id)
        .where(
            MessageTreeState.state == TreeState.RANKING.value,
            MessageTreeState.active.is_(True),
            MessageTreeState.lang == LANG,
            child.deleted.is_(False),
            child.review_result.is_(True),
            child.role.in_(roles),
        )
        .group_by(child.parent_id)
        .having(and_(func.count() > 1, func.min(child.ranking_count) < REQUIRED, own == 0))
        .subquery()
    )
    ballots = (
        select(func.count())
        .where(MessageReaction.message_id == Message.id, MessageReaction.payload_type == RANKING_PAYLOAD)
        .scalar_subquery()
    )
    stmt = (
        select(Message.id, Message.message_tree_id, Message.role)
        .join(grouped, grouped.c.parent_id == Message.id)
        .where(
            Message.lang == LANG,
            Message.deleted.is_(False),
            ~_skipped(Message.id, "_skip_ranking"),
            ~exists().where(
                MessageReaction.message_id == Message.id,
                MessageReaction.user_id == USER,
                MessageReaction.payload_type == RANKING_PAYLOAD,
            ),
            ~_user_has_open_task(Message.id, RANK_TASK_TYPES),
            ballots + _open_tasks(Message.id, RANK_TASK_TYPES) < REQUIRED,
        )
        .limit(LIMIT)
    )
    return stmt.where(Message.id.in_(IDS)) if by_ids else stmt
