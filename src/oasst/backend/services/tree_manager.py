"""The tree lifecycle state machine (see docs/backend/lifecycle.md).

Public functions (all take a session whose transaction the caller commits):

* ``create_tree_state(session, root, cfg, ...)`` – a new root enters ``initial_prompt_review``.
* ``after_text_labels(session, message, cfg)`` – acceptance from reviews, then the ranking check.
* ``after_ranking(session, tree_id, cfg)`` – the scoring check.
* ``halt_tree`` / ``resume_tree`` – moderator controls.
* ``recheck_tree(session, tree_id, cfg)`` – re-run the checks of the tree's current state after
  messages were deleted, undeleted or purged.
* ``prompt_lottery``, ``activate_backlog_tree``, ``auto_moderation``, ``ensure_tree_states``.
"""

from __future__ import annotations

import functools
import logging
import random
import uuid
import zlib
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, text, update
from sqlalchemy.orm import Session

from oasst.backend.db import is_postgres, lock_tree
from oasst.backend.errors import ErrorCode, OasstError
from oasst.backend.models import (
    TERMINAL_STATES,
    Message,
    MessageReaction,
    MessageTreeState,
    TextLabels,
    TreeState,
    User,
    UserStats,
    utcnow,
)
from oasst.backend.services.ranking import merge_rankings
from oasst.backend.settings import TreeManagerConfiguration

log = logging.getLogger(__name__)

RANKING_PAYLOAD = "RankingReactionPayload"


def create_tree_state(
    session: Session,
    root: Message,
    cfg: TreeManagerConfiguration,
    *,
    state: TreeState = TreeState.INITIAL_PROMPT_REVIEW,
    origin: str | None = None,
) -> MessageTreeState:
    """Insert the state row of a new tree, snapshotting the size limits from ``cfg``."""
    goal = cfg.goal_tree_size
    if cfg.random_goal_tree_size and cfg.min_goal_tree_size < cfg.goal_tree_size:
        goal = random.randint(cfg.min_goal_tree_size, cfg.goal_tree_size)
    mts = MessageTreeState(
        message_tree_id=root.id,
        goal_tree_size=goal,
        max_depth=cfg.max_tree_depth,
        max_children_count=cfg.max_children_count,
        state=state.value,
        active=state not in TERMINAL_STATES,
        origin=origin,
        lang=root.lang,
    )
    session.add(mts)
    session.flush()
    return mts


def enter_state(
    session: Session, mts: MessageTreeState, state: TreeState, cfg: TreeManagerConfiguration
) -> None:
    """Move a tree to ``state``; an active tree that stops may pull a backlog tree into ranking."""
    was_active = mts.active
    log.debug("tree %s: %s -> %s", mts.message_tree_id, mts.state, state.value)
    mts.state = state.value
    mts.active = state not in TERMINAL_STATES
    if state == TreeState.GROWING and mts.won_prompt_lottery_date is None:
        mts.won_prompt_lottery_date = utcnow()
    session.flush()  # the original forgot the parentheses here
    if state in TERMINAL_STATES and was_active:
        if random.random() < cfg.p_activate_backlog_tree:
            activate_backlog_tree(session, mts.lang, cfg)
        minimum = cfg.min_active_rankings_per_lang
        if minimum > 0 and count_incomplete_rankings(session, mts.lang, cfg) < minimum:
            activate_backlog_tree(session, mts.lang, cfg)


def acceptance(session: Session, message_id: uuid.UUID) -> float | None:
    """``1 - (mean(spam) + mean(lang_mismatch))`` over task reviews; free labels and reports don't count."""
    rows = session.connection().execute(_acceptance_stmt(), {"message_id": message_id}).scalars().all()
    if not rows:
        return None
    spam = sum(float(r.get("spam", 0) or 0) for r in rows) / len(rows)
    mismatch = sum(float(r.get("lang_mismatch", 0) or 0) for r in rows) / len(rows)
    return 1 - (spam + mismatch)


def after_text_labels(
    session: Session, message: Message, mts: MessageTreeState, cfg: TreeManagerConfiguration
) -> None:
    """Decide acceptance once enough reviews are in, then advance the tree (caller holds the tree lock)."""
    if message.parent_id is None:
        if (
            mts.state != TreeState.INITIAL_PROMPT_REVIEW
            or message.review_count < cfg.num_reviews_initial_prompt
        ):
            return
        score = acceptance(session, message.id)
        if score is not None and score > cfg.acceptance_threshold_initial_prompt:
            message.review_result = True
            session.flush()
            check_condition_for_prompt_lottery(session, mts, cfg)
        else:
            if message.review_result is None:
                message.review_result = False
            enter_state(session, mts, TreeState.ABORTED_LOW_GRADE, cfg)
        return
    if message.review_count < cfg.num_reviews_reply:
        return  # still awaiting review, so the tree cannot be complete yet
    score = acceptance(session, message.id)
    if score is not None and score > cfg.acceptance_threshold_reply:
        message.review_result = True
    elif message.review_result is None:
        message.review_result = False
    session.flush()
    check_condition_for_ranking_state(session, mts, cfg)


def check_condition_for_prompt_lottery(
    session: Session, mts: MessageTreeState, cfg: TreeManagerConfiguration
) -> None:
    if not mts.active or mts.state != TreeState.INITIAL_PROMPT_REVIEW:
        return
    root = session.get(Message, mts.message_tree_id)
    if root is not None and root.review_result and not root.deleted:
        enter_state(session, mts, TreeState.PROMPT_LOTTERY_WAITING, cfg)


def tree_counts(session: Session, tree_id: uuid.UUID, cfg: TreeManagerConfiguration) -> tuple[int, int]:
    """(accepted messages, messages still awaiting review) of a tree, deleted ones excluded."""
    row = (
        session.connection()
        .execute(_tree_counts_stmt(), {"tree_id": tree_id, "required": cfg.num_reviews_reply})
        .one()
    )
    return int(row[0] or 0), int(row[1] or 0)


@functools.cache
def _acceptance_stmt() -> Any:
    return select(TextLabels.labels).where(
        TextLabels.message_id == bindparam("message_id"), TextLabels.task_id.is_not(None)
    )


@functools.cache
def _tree_counts_stmt() -> Any:
    accepted = func.count().filter(Message.review_result.is_(True))
    awaiting = func.count().filter(
        and_(Message.review_result.is_(None), Message.review_count < bindparam("required"))
    )
    return select(accepted, awaiting).where(
        Message.message_tree_id == bindparam("tree_id"), Message.deleted.is_(False)
    )


def check_condition_for_ranking_state(
    session: Session, mts: MessageTreeState, cfg: TreeManagerConfiguration
) -> None:
    """growing -> ranking once the goal size is accepted and nothing awaits review (caller holds the lock)."""
    if not mts.active or mts.state != TreeState.GROWING:
        return
    size, awaiting = tree_counts(session, mts.message_tree_id, cfg)
    if size == 0:
        enter_state(session, mts, TreeState.HALTED_BY_MODERATOR, cfg)
        return
    if size < mts.goal_tree_size or awaiting > 0:
        return
    enter_state(session, mts, TreeState.RANKING, cfg)
    # The original only re-checked this at the next startup: a tree with nothing to rank got stuck.
    check_condition_for_scoring_state(session, mts, cfg)


def ranked_roles(cfg: TreeManagerConfiguration) -> tuple[str, ...]:
    return ("assistant", "prompter") if cfg.rank_prompter_replies else ("assistant",)


def rankable_parents(
    session: Session, tree_id: uuid.UUID, cfg: TreeManagerConfiguration
) -> dict[uuid.UUID, list[uuid.UUID]]:
    """Parents with more than one accepted, non-deleted child of a ranked role -> those children."""
    rows = session.execute(
        select(Message.parent_id, Message.id)
        .where(
            Message.message_tree_id == tree_id,
            Message.parent_id.is_not(None),
            Message.deleted.is_(False),
            Message.review_result.is_(True),
            Message.role.in_(ranked_roles(cfg)),
        )
        .order_by(Message.created_date, Message.id)
    ).all()
    children: dict[uuid.UUID, list[uuid.UUID]] = {}
    for parent_id, child_id in rows:
        if parent_id is not None:
            children.setdefault(parent_id, []).append(child_id)
    return {p: c for p, c in children.items() if len(c) > 1}


def _ballots(session: Session, parent_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[dict[str, object]]]:
    rows = session.execute(
        select(MessageReaction.message_id, MessageReaction.payload)
        .where(MessageReaction.message_id.in_(parent_ids), MessageReaction.payload_type == RANKING_PAYLOAD)
        .order_by(MessageReaction.created_date)
    ).all()
    ballots: dict[uuid.UUID, list[dict[str, object]]] = {p: [] for p in parent_ids}
    for parent_id, payload in rows:
        ballots.setdefault(parent_id, []).append(payload)
    return ballots


def check_condition_for_scoring_state(
    session: Session, mts: MessageTreeState, cfg: TreeManagerConfiguration
) -> None:
    """ranking -> ready_for_scoring -> ready_for_export once every rankable parent has enough ballots."""
    if mts.state not in (TreeState.RANKING, TreeState.READY_FOR_SCORING, TreeState.SCORING_FAILED):
        return
    parents = rankable_parents(session, mts.message_tree_id, cfg)
    ballots = _ballots(session, list(parents))
    if any(len(ballots.get(p, [])) < cfg.num_required_rankings for p in parents):
        return
    enter_state(session, mts, TreeState.READY_FOR_SCORING, cfg)
    try:
        with session.begin_nested():
            update_message_ranks(session, mts.message_tree_id, cfg)
    except Exception:
        log.exception("scoring failed for tree %s", mts.message_tree_id)
        enter_state(session, mts, TreeState.SCORING_FAILED, cfg)
        return
    enter_state(session, mts, TreeState.READY_FOR_EXPORT, cfg)


def update_message_ranks(session: Session, tree_id: uuid.UUID, cfg: TreeManagerConfiguration) -> int:
    """Merge each parent's ballots by ranked pairs and store ``rank`` (0 = best). Returns parents ranked.

    Ballots marked ``not_rankable`` (the volunteer judged every reply unacceptable) still count toward
    the required number of rankings, but their order is not a preference and is left out of the merge.
    Siblings outside the ballots' common set, or of parents whose ballots were all not_rankable, get
    ``rank = NULL``.
    """
    parents = rankable_parents(session, tree_id, cfg)
    ballots = _ballots(session, list(parents))
    ranked = 0
    for parent_id, children in parents.items():
        orders = [
            [str(i) for i in b.get("ranked_message_ids", [])]  # type: ignore[attr-defined]
            for b in ballots.get(parent_id, [])
            if not b.get("not_rankable")
        ]
        consensus = merge_rankings(orders) if orders else None
        position = {uuid.UUID(mid): i for i, mid in enumerate(consensus or [])}
        for child_id in children:
            session.execute(update(Message).where(Message.id == child_id).values(rank=position.get(child_id)))
        ranked += consensus is not None
    return ranked


def count_incomplete_rankings(session: Session, lang: str, cfg: TreeManagerConfiguration) -> int:
    child = Message
    rows = session.execute(
        select(child.parent_id)
        .join(MessageTreeState, MessageTreeState.message_tree_id == child.message_tree_id)
        .where(
            MessageTreeState.state == TreeState.RANKING,
            MessageTreeState.active.is_(True),
            MessageTreeState.lang == lang,
            child.deleted.is_(False),
            child.review_result.is_(True),
            child.role.in_(ranked_roles(cfg)),
        )
        .group_by(child.parent_id)
        .having(and_(func.count() > 1, func.min(child.ranking_count) < cfg.num_required_rankings))
    ).all()
    return len(rows)


def activate_backlog_tree(
    session: Session, lang: str, cfg: TreeManagerConfiguration
) -> MessageTreeState | None:
    """Move the oldest backlog tree of ``lang`` with something to rank into ``ranking``."""
    while True:
        stmt = (
            select(MessageTreeState)
            .where(MessageTreeState.state == TreeState.BACKLOG_RANKING, MessageTreeState.lang == lang)
            .order_by(MessageTreeState.created_date, MessageTreeState.message_tree_id)
            .limit(1)
        )
        if is_postgres(session):
            stmt = stmt.with_for_update(skip_locked=True)
        mts = session.scalars(stmt).first()
        if mts is None:
            return None
        if rankable_parents(session, mts.message_tree_id, cfg):
            enter_state(session, mts, TreeState.RANKING, cfg)
            return mts
        mts.state, mts.active = TreeState.ABORTED_LOW_GRADE.value, False
        session.flush()


def halt_tree(session: Session, tree_id: uuid.UUID, cfg: TreeManagerConfiguration) -> MessageTreeState:
    mts = _locked(session, tree_id)
    enter_state(session, mts, TreeState.HALTED_BY_MODERATOR, cfg)
    return mts


def resume_tree(session: Session, tree_id: uuid.UUID, cfg: TreeManagerConfiguration) -> MessageTreeState:
    mts = _locked(session, tree_id)
    reactivate_tree(session, mts, cfg)
    return mts


def _locked(session: Session, tree_id: uuid.UUID) -> MessageTreeState:
    mts = lock_tree(session, tree_id)
    if mts is None:
        raise OasstError(f"No message tree {tree_id}.", ErrorCode.NO_MESSAGE_TREE_FOUND, HTTPStatus.NOT_FOUND)
    return mts


def reactivate_tree(session: Session, mts: MessageTreeState, cfg: TreeManagerConfiguration) -> None:
    """Put a halted (or purged) tree back where it belongs: growing if it won the lottery, else review."""
    if mts.state == TreeState.PROMPT_LOTTERY_WAITING:
        return
    if mts.won_prompt_lottery_date is not None:
        enter_state(session, mts, TreeState.GROWING, cfg)
        check_condition_for_ranking_state(session, mts, cfg)
    else:
        enter_state(session, mts, TreeState.INITIAL_PROMPT_REVIEW, cfg)
        check_condition_for_prompt_lottery(session, mts, cfg)


def recheck_tree(session: Session, tree_id: uuid.UUID, cfg: TreeManagerConfiguration) -> None:
    """Re-run the checks of the tree's current state (after deletes, undeletes and purges)."""
    mts = lock_tree(session, tree_id)
    if mts is None:
        return
    if mts.state == TreeState.INITIAL_PROMPT_REVIEW:
        check_condition_for_prompt_lottery(session, mts, cfg)
    elif mts.state == TreeState.GROWING:
        check_condition_for_ranking_state(session, mts, cfg)
    elif mts.state == TreeState.RANKING:
        check_condition_for_scoring_state(session, mts, cfg)


def halt_lottery_prompts_of_user(session: Session, user_id: uuid.UUID, cfg: TreeManagerConfiguration) -> int:
    """Halt the trees of ``user_id`` still waiting in the lottery (for disabled or deleted users)."""
    tree_ids = session.scalars(
        select(MessageTreeState.message_tree_id)
        .join(Message, Message.id == MessageTreeState.message_tree_id)
        .where(MessageTreeState.state == TreeState.PROMPT_LOTTERY_WAITING, Message.user_id == user_id)
    ).all()
    for tree_id in tree_ids:
        mts = lock_tree(session, tree_id)
        if mts is not None and mts.state == TreeState.PROMPT_LOTTERY_WAITING:
            enter_state(session, mts, TreeState.HALTED_BY_MODERATOR, cfg)
    return len(tree_ids)


def state_counts_by_lang(session: Session, lang: str) -> dict[str, int]:
    rows = session.connection().execute(_state_counts_stmt(), {"lang": lang}).all()
    return {state: int(n) for state, n in rows}


@functools.cache
def _state_counts_stmt() -> Any:
    # built once and run on the connection: the lottery runs several times a second per process
    return (
        select(MessageTreeState.state, func.count())
        .where(
            MessageTreeState.lang == bindparam("lang"),
            MessageTreeState.active.is_(True) | (MessageTreeState.state == TreeState.PROMPT_LOTTERY_WAITING),
        )
        .group_by(MessageTreeState.state)
    )


def prompt_lottery(session: Session, lang: str, cfg: TreeManagerConfiguration, *, max_activate: int) -> int:
    """Activate waiting prompts of ``lang`` up to ``max_active_trees`` growing trees.

    Returns how many initial-prompt tasks may be handed out. Only one transaction per language runs
    the draw at a time (others skip it instead of racing into serialization errors as the original did).
    """
    counts = state_counts_by_lang(session, lang)
    growing = counts.get(TreeState.GROWING, 0)
    waiting = counts.get(TreeState.PROMPT_LOTTERY_WAITING, 0)
    activated = 0
    if growing < cfg.max_active_trees and waiting > 0 and _try_lock(session, f"lottery:{lang}"):
        counts = state_counts_by_lang(session, lang)  # re-read under the lock
        growing = counts.get(TreeState.GROWING, 0)
        while growing < cfg.max_active_trees and activated < max_activate:
            if not _draw_one(session, lang, cfg):
                break
            growing += 1
            activated += 1
        waiting = max(0, waiting - activated)
    in_review = counts.get(TreeState.INITIAL_PROMPT_REVIEW, 0)
    missing_growing = max(0, cfg.max_active_trees - growing)
    return min(
        missing_growing + max(0, cfg.max_initial_prompt_review - in_review),
        max(0, cfg.max_prompt_lottery_waiting - waiting),
    )


def _try_lock(session: Session, name: str) -> bool:
    if not is_postgres(session):
        return True
    key = zlib.crc32(name.encode()) - 2**31
    return bool(session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}).scalar())


def _draw_one(session: Session, lang: str, cfg: TreeManagerConfiguration) -> bool:
    """Pick an author weighted by ``1 + month.reply_ranked_1``, then one of their waiting prompts."""
    authors = session.execute(
        select(Message.user_id, func.coalesce(func.max(UserStats.reply_ranked_1), 0))
        .join(MessageTreeState, MessageTreeState.message_tree_id == Message.id)
        .join(User, User.id == Message.user_id)
        .outerjoin(UserStats, and_(UserStats.user_id == Message.user_id, UserStats.time_frame == "month"))
        .where(
            MessageTreeState.state == TreeState.PROMPT_LOTTERY_WAITING,
            MessageTreeState.lang == lang,
            Message.deleted.is_(False),
            Message.review_result.is_(True),
            User.enabled.is_(True),
            User.deleted.is_(False),
        )
        .group_by(Message.user_id)
    ).all()
    if not authors:
        return False
    author = random.choices([a for a, _ in authors], weights=[1 + int(w) for _, w in authors])[0]
    tree_ids = session.scalars(
        select(MessageTreeState.message_tree_id)
        .join(Message, Message.id == MessageTreeState.message_tree_id)
        .where(
            MessageTreeState.state == TreeState.PROMPT_LOTTERY_WAITING,
            MessageTreeState.lang == lang,
            Message.user_id == author,
            Message.deleted.is_(False),
            Message.review_result.is_(True),
        )
        .limit(100)
    ).all()
    for tree_id in random.sample(list(tree_ids), len(tree_ids)):
        mts = lock_tree(session, tree_id)
        if mts is not None and mts.state == TreeState.PROMPT_LOTTERY_WAITING:
            enter_state(session, mts, TreeState.GROWING, cfg)
            return True
    return False


def auto_moderate_message(session: Session, message: Message, cfg: TreeManagerConfiguration) -> None:
    """Apply the red-flag and skip thresholds to one message whose emoji counts just changed."""
    if not cfg.auto_mod_enabled:
        return
    mts = lock_tree(session, message.message_tree_id)
    if mts is None or not mts.active or mts.state not in (TreeState.INITIAL_PROMPT_REVIEW, TreeState.GROWING):
        return
    if not (message.parent_id is None or message.review_result is not False):
        return
    emojis = message.emojis or {}
    if emojis.get("red_flag", 0) >= cfg.auto_mod_red_flags:
        if message.parent_id is None:
            enter_state(session, mts, TreeState.ABORTED_LOW_GRADE, cfg)
        else:
            soft_delete_subtree(session, message)
            check_condition_for_ranking_state(session, mts, cfg)
        return
    if emojis.get("_skip_reply", 0) >= cfg.auto_mod_max_skip_reply and mts.state == TreeState.GROWING:
        enter_state(session, mts, TreeState.HALTED_BY_MODERATOR, cfg)


def auto_moderation(session: Session, lang: str | None, cfg: TreeManagerConfiguration) -> int:
    """Sweep active trees for messages over the auto-moderation thresholds (startup and scheduler)."""
    if not cfg.auto_mod_enabled:
        return 0
    red = Message.emojis["red_flag"].as_integer()
    skips = Message.emojis["_skip_reply"].as_integer()
    stmt = (
        select(Message)
        .join(MessageTreeState, MessageTreeState.message_tree_id == Message.message_tree_id)
        .where(
            MessageTreeState.active.is_(True),
            MessageTreeState.state.in_([TreeState.INITIAL_PROMPT_REVIEW, TreeState.GROWING]),
            Message.deleted.is_(False),
            or_(red >= cfg.auto_mod_red_flags, skips >= cfg.auto_mod_max_skip_reply),
        )
    )
    if lang is not None:
        stmt = stmt.where(MessageTreeState.lang == lang)
    messages = session.scalars(stmt).all()
    for message in messages:
        auto_moderate_message(session, message, cfg)
    return len(messages)


def soft_delete_subtree(session: Session, message: Message) -> int:
    """Mark ``message`` and all its descendants deleted; returns how many changed."""
    ids = [message.id]
    frontier = [message.id]
    while frontier:
        frontier = list(session.scalars(select(Message.id).where(Message.parent_id.in_(frontier))))
        ids.extend(frontier)
    result = session.execute(
        update(Message).where(Message.id.in_(ids), Message.deleted.is_(False)).values(deleted=True)
    )
    session.expire_all()
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def ensure_tree_states(session: Session, cfg: TreeManagerConfiguration) -> int:
    """Startup repair: state rows for roots without one, halted lottery prompts of disabled users, and
    the state checks of every active tree (the original did this too; it is cheap and idempotent)."""
    missing = session.scalars(
        select(Message)
        .outerjoin(MessageTreeState, MessageTreeState.message_tree_id == Message.id)
        .where(Message.parent_id.is_(None), MessageTreeState.message_tree_id.is_(None))
    ).all()
    for root in missing:
        size = session.scalar(select(func.count()).where(Message.message_tree_id == root.id)) or 0
        create_tree_state(
            session, root, cfg, state=TreeState.GROWING if size > 1 else TreeState.INITIAL_PROMPT_REVIEW
        )
    disabled = session.scalars(
        select(User.id).where(or_(User.enabled.is_(False), User.deleted.is_(True)))
    ).all()
    for user_id in disabled:
        halt_lottery_prompts_of_user(session, user_id, cfg)
    active = session.scalars(
        select(MessageTreeState.message_tree_id).where(MessageTreeState.active.is_(True))
    ).all()
    for tree_id in active:
        recheck_tree(session, tree_id, cfg)
    return len(missing)


def retry_scoring_failed(session: Session, cfg: TreeManagerConfiguration) -> int:
    trees = session.scalars(
        select(MessageTreeState.message_tree_id).where(MessageTreeState.state == TreeState.SCORING_FAILED)
    ).all()
    for tree_id in trees:
        mts = _locked(session, tree_id)
        check_condition_for_scoring_state(session, mts, cfg)
        if mts.state == TreeState.SCORING_FAILED:
            enter_state(session, mts, TreeState.RANKING, cfg)
    return len(trees)
