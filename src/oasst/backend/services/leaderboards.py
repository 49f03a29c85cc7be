"""Leaderboards: per-user contribution counters per time frame, the leader score, ranks, levels, streaks.

A recompute (:func:`recompute_user_stats`) rebuilds one time frame's ``user_stats`` rows in the caller's
transaction: a handful of GROUP BY queries gather every counter for every user at once, then the frame's
rows are deleted and re-inserted with their scores and ranks. Readers see either the old board or the new
one, never half of each.

Counters (activity since the frame's base date; ``day`` = now-24h, ``week``/``month`` = midnight of
today-7d/today-30d, ``total`` = everything):

* ``prompts`` / ``accepted_prompts``: the user's non-deleted roots (accepted: ``review_result`` true);
* ``replies_assistant`` / ``replies_prompter`` and their ``accepted_*`` variants: non-deleted replies;
* ``labels_simple`` / ``labels_full``: done label tasks, by the task payload's ``mode``;
* ``rankings_total``: the user's ranking ballots (``RankingReactionPayload`` reactions);
* ``rankings_good``: the user's ballots whose first choice is the message that the merged consensus
  ranked best (``Message.rank == 0``) among that parent's replies.
  *Fixed*: the original never computed it (always 0), although the leader score counts it.
* ``reply_ranked_1/2/3``: the user's non-deleted replies whose consensus ``Message.rank`` is 0/1/2.
  *Fixed*: the original counted how often individual ballots put a reply first/second/third, so one
  tree's rankers could award the same reply several "first places".

The leader score weights them as the original did (:func:`leader_score`). Ranks number users by
(score desc, user id) and count only users who are shown on the leaderboard, enabled and not deleted
(the original forgot ``deleted``). Levels: see :data:`THRESHOLDS`.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, time, timedelta
from http import HTTPStatus
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, func, insert, or_, select, true, update
from sqlalchemy.orm import Session

from oasst.backend.db import lock_named
from oasst.backend.errors import ErrorCode, OasstError
from oasst.backend.models import Message, MessageReaction, Task, User, UserStats, utcnow
from oasst.protocol.stats import LEVEL_THRESHOLDS as THRESHOLDS
from oasst.protocol.stats import LeaderboardStats, TimeFrame, UserScore

__all__ = [
    "COUNTER_FIELDS",
    "THRESHOLDS",
    "base_date_for",
    "get_leaderboard",
    "get_user_stats",
    "get_user_stats_window",
    "leader_score",
    "level_for",
    "recompute_all_user_stats",
    "recompute_user_stats",
    "reset_streaks",
]

RANKING_PAYLOAD_TYPE = "RankingReactionPayload"
LABEL_TASK_TYPES = ("label_initial_prompt", "label_prompter_reply", "label_assistant_reply")
STREAK_TIMEOUT = timedelta(hours=36)

COUNTER_FIELDS = (
    "prompts",
    "replies_assistant",
    "replies_prompter",
    "labels_simple",
    "labels_full",
    "rankings_total",
    "rankings_good",
    "accepted_prompts",
    "accepted_replies_assistant",
    "accepted_replies_prompter",
    "reply_ranked_1",
    "reply_ranked_2",
    "reply_ranked_3",
)


def level_for(score: int | None) -> int:
    """1..100 for a user with stats (score 0 is level 1), 0 for a user without a stats row."""
    if score is None:
        return 0
    return sum(1 for threshold in THRESHOLDS if threshold <= score)


def leader_score(c: Mapping[str, int]) -> int:
    """The original's weighting of the counters (prompts count a tenth, first-ranked replies nine)."""
    return (
        int(c["prompts"] * 0.1)
        + 4 * c["replies_assistant"]
        + c["replies_prompter"]
        + c["labels_simple"]
        + 2 * c["labels_full"]
        + c["rankings_total"]
        + c["rankings_good"]
        + int(c["accepted_prompts"] * 0.1)
        + 4 * c["accepted_replies_assistant"]
        + c["accepted_replies_prompter"]
        + 9 * c["reply_ranked_1"]
        + 3 * c["reply_ranked_2"]
        + c["reply_ranked_3"]
    )


def base_date_for(time_frame: TimeFrame, now: datetime) -> datetime | None:
    """Where a time frame starts: day = now-24h, week/month = midnight of today-7d/-30d, total = None."""
    if time_frame == TimeFrame.day:
        return now - timedelta(days=1)
    if time_frame == TimeFrame.total:
        return None
    days = 7 if time_frame == TimeFrame.week else 30
    return datetime.combine((now - timedelta(days=days)).date(), time(), tzinfo=now.tzinfo)


# ---------------------------------------------------------------------------------------------- counters


def _since(column: Any, base_date: datetime | None) -> ColumnElement[bool]:
    return column >= base_date if base_date is not None else true()


def _count_if(*conditions: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.sum(case((and_(*conditions), 1), else_=0))


def _message_counters(session: Session, base_date: datetime | None) -> Iterable[Any]:
    """Prompt, reply and consensus-rank counters of every author, in one pass over ``message``."""
    root, reply = Message.parent_id.is_(None), Message.parent_id.is_not(None)
    accepted = Message.review_result.is_(True)
    assistant, prompter = Message.role == "assistant", Message.role == "prompter"
    stmt = (
        select(
            Message.user_id,
            _count_if(root).label("prompts"),
            _count_if(root, accepted).label("accepted_prompts"),
            _count_if(reply, assistant).label("replies_assistant"),
            _count_if(reply, prompter).label("replies_prompter"),
            _count_if(reply, assistant, accepted).label("accepted_replies_assistant"),
            _count_if(reply, prompter, accepted).label("accepted_replies_prompter"),
            _count_if(reply, Message.rank == 0).label("reply_ranked_1"),
            _count_if(reply, Message.rank == 1).label("reply_ranked_2"),
            _count_if(reply, Message.rank == 2).label("reply_ranked_3"),
        )
        .where(
            Message.user_id.is_not(None),
            Message.deleted.is_(False),
            _since(Message.created_date, base_date),
        )
        .group_by(Message.user_id)
    )
    return session.execute(stmt).mappings()


def _label_counters(session: Session, base_date: datetime | None) -> Iterable[Any]:
    mode = Task.payload["mode"].as_string()
    stmt = (
        select(Task.user_id, mode.label("mode"), func.count().label("n"))
        .where(
            Task.user_id.is_not(None),
            Task.done.is_(True),
            Task.task_type.in_(LABEL_TASK_TYPES),
            _since(Task.created_date, base_date),
        )
        .group_by(Task.user_id, mode)
    )
    return session.execute(stmt).all()


def _ranking_filter(base_date: datetime | None) -> list[ColumnElement[bool]]:
    return [
        MessageReaction.payload_type == RANKING_PAYLOAD_TYPE,
        _since(MessageReaction.created_date, base_date),
    ]


def _rankings_total(session: Session, base_date: datetime | None) -> Iterable[Any]:
    stmt = (
        select(MessageReaction.user_id, func.count())
        .where(*_ranking_filter(base_date))
        .group_by(MessageReaction.user_id)
    )
    return session.execute(stmt).all()


def _rankings_good(session: Session, base_date: datetime | None) -> Counter[uuid.UUID]:
    """Ballots whose first choice is the consensus winner (``rank == 0``) of the ranked parent's replies.

    The first choice is ``payload["ranked_message_ids"][0]`` (also accepted one level down, under
    ``payload["payload"]``, the original's container layout).
    """
    payload = MessageReaction.payload
    first_choice = func.coalesce(
        payload[("ranked_message_ids", 0)].as_string(),
        payload[("payload", "ranked_message_ids", 0)].as_string(),
    )
    ballots = session.execute(
        select(MessageReaction.user_id, MessageReaction.message_id, first_choice).where(
            *_ranking_filter(base_date)
        )
    ).all()
    # Two plain scans joined here rather than one SQL join: the join's plan degrades badly on
    # PostgreSQL when the statistics are stale (e.g. right after an import).
    winners = dict(session.execute(select(Message.parent_id, Message.id).where(Message.rank == 0)).all())
    good: Counter[uuid.UUID] = Counter()
    for user_id, parent_id, first in ballots:
        winner = winners.get(parent_id)
        if winner is not None and first is not None and _same_id(first, winner):
            good[user_id] += 1
    return good


def _same_id(text: str, message_id: uuid.UUID) -> bool:
    if text == str(message_id):
        return True
    try:
        return uuid.UUID(str(text)) == message_id
    except ValueError:
        return False


def compute_user_counters(session: Session, *, base_date: datetime | None) -> dict[uuid.UUID, dict[str, int]]:
    """Every counter of every user active since ``base_date`` (users without activity are absent)."""
    counters: dict[uuid.UUID, dict[str, int]] = {}

    def of(user_id: uuid.UUID) -> dict[str, int]:
        return counters.setdefault(user_id, dict.fromkeys(COUNTER_FIELDS, 0))

    for row in _message_counters(session, base_date):
        c = of(row["user_id"])
        for name in COUNTER_FIELDS:
            if name in row:
                c[name] = int(row[name] or 0)
    for user_id, mode, n in _label_counters(session, base_date):
        if mode in ("simple", "full"):
            of(user_id)[f"labels_{mode}"] += n
    for user_id, n in _rankings_total(session, base_date):
        of(user_id)["rankings_total"] = n
    for user_id, n in _rankings_good(session, base_date).items():
        of(user_id)["rankings_good"] = n
    return counters


# ---------------------------------------------------------------------------------------------- recompute


def _eligible_user_ids(session: Session) -> set[uuid.UUID]:
    """Users who may hold a rank: shown on the leaderboard, enabled and not deleted."""
    stmt = select(User.id).where(
        User.show_on_leaderboard.is_(True), User.enabled.is_(True), User.deleted.is_(False)
    )
    return set(session.scalars(stmt))


def rank_by_score(scores: Mapping[uuid.UUID, int], eligible: set[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Row numbers (from 1) by score descending, then user id, over the eligible users only."""
    ordered = sorted((uid for uid in scores if uid in eligible), key=lambda uid: (-scores[uid], uid))
    return {uid: position for position, uid in enumerate(ordered, start=1)}


def user_stats_lock(time_frame: TimeFrame) -> str:
    """The name of the lock that serialises recomputes of one frame (see :func:`oasst.backend.db.lock_named`)."""
    return f"oasst.user_stats.{time_frame.value}"


def recompute_user_stats(session: Session, *, time_frame: TimeFrame, now: datetime | None = None) -> int:
    """Rebuild one time frame's leaderboard in the caller's transaction; returns the number of rows."""
    lock_named(session, user_stats_lock(time_frame))
    now = now or utcnow()
    base_date = base_date_for(time_frame, now)
    counters = compute_user_counters(session, base_date=base_date)
    scores = {uid: leader_score(c) for uid, c in counters.items()}
    ranks = rank_by_score(scores, _eligible_user_ids(session))
    rows = [
        {
            "time_frame": time_frame.value,
            "user_id": uid,
            "base_date": base_date,
            "modified_date": now,
            "leader_score": scores[uid],
            "rank": ranks.get(uid),
            **c,
        }
        for uid, c in counters.items()
    ]
    session.execute(delete(UserStats).where(UserStats.time_frame == time_frame.value))
    if rows:
        session.execute(insert(UserStats), rows)
    return len(rows)


def recompute_all_user_stats(session: Session, *, now: datetime | None = None) -> None:
    for time_frame in TimeFrame:
        recompute_user_stats(session, time_frame=time_frame, now=now)


def reset_streaks(session: Session, *, now: datetime | None = None) -> int:
    """End the streaks of users inactive for 36 hours (both streak fields become NULL)."""
    cutoff = (now or utcnow()) - STREAK_TIMEOUT
    stmt = (
        update(User)
        .where(
            User.last_activity_date < cutoff,
            or_(User.streak_days.is_not(None), User.streak_last_day_date.is_not(None)),
        )
        .values(streak_days=None, streak_last_day_date=None)
        .execution_options(synchronize_session=False)
    )
    count: int = session.execute(stmt).rowcount  # type: ignore[attr-defined]
    return count


# ---------------------------------------------------------------------------------------------- reads


def user_score(user: User, stats: UserStats | None, *, highlighted_user_id: uuid.UUID | None) -> UserScore:
    counters = {name: getattr(stats, name) for name in COUNTER_FIELDS} if stats is not None else {}
    return UserScore(
        rank=stats.rank if stats is not None else None,
        user_id=user.id,
        highlighted=highlighted_user_id is not None and user.id == highlighted_user_id,
        username=user.username,
        auth_method=user.auth_method,
        display_name=user.display_name,
        leader_score=stats.leader_score if stats is not None else 0,
        level=level_for(stats.leader_score if stats is not None else None),
        base_date=stats.base_date if stats is not None else None,
        modified_date=stats.modified_date if stats is not None else utcnow(),
        streak_last_day_date=user.streak_last_day_date,
        streak_days=user.streak_days,
        last_activity_date=user.last_activity_date,
        **counters,
    )


def _board(
    session: Session,
    time_frame: TimeFrame,
    *,
    highlighted_user_id: uuid.UUID | None,
    limit: int | None = None,
    rank_range: tuple[int, int] | None = None,
) -> LeaderboardStats:
    stmt = (
        select(User, UserStats)
        .join(UserStats, UserStats.user_id == User.id)
        .where(
            UserStats.time_frame == time_frame.value,
            UserStats.rank.is_not(None),
            User.show_on_leaderboard.is_(True),
            User.enabled.is_(True),
            User.deleted.is_(False),
        )
        .order_by(UserStats.rank)
    )
    if rank_range is not None:
        stmt = stmt.where(UserStats.rank.between(*rank_range))
    if limit is not None:
        stmt = stmt.limit(limit)
    board = [
        user_score(user, stats, highlighted_user_id=highlighted_user_id)
        for user, stats in session.execute(stmt).all()
    ]
    dates = [s.modified_date for s in board if s.modified_date is not None]
    return LeaderboardStats(
        time_frame=time_frame.value, last_updated=max(dates, default=utcnow()), leaderboard=board
    )


def get_leaderboard(
    session: Session,
    *,
    time_frame: TimeFrame,
    max_count: int = 100,
    highlighted_user_id: uuid.UUID | None = None,
) -> LeaderboardStats:
    """The top ``max_count`` ranked users of a time frame; ``highlighted_user_id``'s row is marked."""
    return _board(session, time_frame, highlighted_user_id=highlighted_user_id, limit=max_count)


def _get_user(session: Session, user_id: uuid.UUID) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise OasstError(f"User {user_id} not found.", ErrorCode.USER_NOT_FOUND, HTTPStatus.NOT_FOUND)
    return user


def get_user_stats(session: Session, user_id: uuid.UUID) -> dict[str, UserScore]:
    """The user's score in every time frame, keyed by frame name (level 0 and no rank where none exists).

    Unlike the original, every frame is always present (it dropped frames without a stats row, so
    ``/users/{id}/stats/{tf}`` failed with a server error for users active only long ago).
    """
    user = _get_user(session, user_id)
    rows = {s.time_frame: s for s in session.scalars(select(UserStats).where(UserStats.user_id == user_id))}
    return {tf.value: user_score(user, rows.get(tf.value), highlighted_user_id=user.id) for tf in TimeFrame}


def get_user_stats_window(
    session: Session, user_id: uuid.UUID, time_frame: TimeFrame, window_size: int = 5
) -> LeaderboardStats | None:
    """The ``window_size`` ranks around the user (the user highlighted), or None if the user has no rank.

    The window starts ``window_size // 2`` ranks above the user (never above rank 1) and holds exactly
    ``window_size`` ranks (the original's held one more).
    """
    user = _get_user(session, user_id)
    if not user.show_on_leaderboard or not user.enabled or user.deleted:
        return None
    stats = session.get(UserStats, (time_frame.value, user_id))
    if stats is None or stats.rank is None:
        return None
    low = max(1, stats.rank - window_size // 2)
    return _board(session, time_frame, highlighted_user_id=user.id, rank_range=(low, low + window_size - 1))
