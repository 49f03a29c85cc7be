"""Trollboard: negative signals others gave on each user's messages, per time frame.

A recompute (:func:`recompute_troll_stats`) rebuilds one time frame's ``troll_stats`` rows in the
caller's transaction from three GROUP BY queries over the user's non-deleted messages written since the
frame's base date (see :func:`oasst.backend.services.leaderboards.base_date_for`):

* ``upvotes`` / ``downvotes`` / ``red_flags``: sums of the ``+1`` / ``-1`` / ``red_flag`` counts in
  ``message.emojis``;
* ``spam_prompts``: the user's prompts whose tree was ``aborted_low_grade``;
* label sums and averages over the labels *received* on the user's messages: a flag label (spam,
  lang_mismatch, not_appropriate, pii, hate_speech, sexual_content, political_content) counts once per
  label submission whose value is >= 0.5; quality/humor/toxicity/violence/helpfulness are averaged.
  *Fixed*: the original only looked at messages that had received an emoji, silently dropping the labels
  of every other message. (It also truncated label values to int, so only a value of exactly 1 counted.)

``troll_score = 3*red_flags - upvotes + downvotes + spam_prompts + lang_mismach + not_appropriate + pii
+ hate_speech + sexual_content + political_content``; the board ranks by score desc, then user id, over
all users (disabled ones included: moderators use it to review bans).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, delete, func, insert, select
from sqlalchemy.orm import Session

from oasst.backend.db import lock_named
from oasst.backend.models import Message, MessageTreeState, TextLabels, TreeState, TrollStats, User, utcnow
from oasst.backend.services.leaderboards import base_date_for
from oasst.protocol.stats import TimeFrame, TrollboardStats, TrollScore

__all__ = ["FLAG_THRESHOLD", "get_trollboard", "recompute_troll_stats", "troll_score"]

FLAG_THRESHOLD = 0.5

# troll_stats column -> label name (the column keeps the original's misspelt wire name)
FLAG_LABELS = {
    "spam": "spam",
    "lang_mismach": "lang_mismatch",
    "not_appropriate": "not_appropriate",
    "pii": "pii",
    "hate_speech": "hate_speech",
    "sexual_content": "sexual_content",
    "political_content": "political_content",
}
LIKERT_LABELS = ("quality", "humor", "toxicity", "violence", "helpfulness")
COUNT_FIELDS = ("red_flags", "upvotes", "downvotes", "spam_prompts", *FLAG_LABELS)
EMOJI_FIELDS = {"upvotes": "+1", "downvotes": "-1", "red_flags": "red_flag"}


def troll_score(s: dict[str, Any]) -> int:
    return int(
        3 * s["red_flags"]
        - s["upvotes"]
        + s["downvotes"]
        + s["spam_prompts"]
        + s["lang_mismach"]
        + s["not_appropriate"]
        + s["pii"]
        + s["hate_speech"]
        + s["sexual_content"]
        + s["political_content"]
    )


def _user_messages(base_date: datetime | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [Message.user_id.is_not(None), Message.deleted.is_(False)]
    if base_date is not None:
        conditions.append(Message.created_date >= base_date)
    return conditions


def _emoji_counts(session: Session, base_date: datetime | None) -> Iterable[Any]:
    sums = [
        func.sum(func.coalesce(Message.emojis[code].as_integer(), 0)).label(field)
        for field, code in EMOJI_FIELDS.items()
    ]
    stmt = select(Message.user_id, *sums).where(*_user_messages(base_date)).group_by(Message.user_id)
    return session.execute(stmt).mappings()


def _spam_prompts(session: Session, base_date: datetime | None) -> Iterable[Any]:
    conditions: list[ColumnElement[bool]] = [
        MessageTreeState.state == TreeState.ABORTED_LOW_GRADE.value,
        Message.user_id.is_not(None),
    ]
    if base_date is not None:
        conditions.append(Message.created_date >= base_date)
    stmt = (
        select(Message.user_id, func.count())
        .select_from(MessageTreeState)
        .join(Message, Message.id == MessageTreeState.message_tree_id)
        .where(*conditions)
        .group_by(Message.user_id)
    )
    return session.execute(stmt).all()


def _received_labels(session: Session, base_date: datetime | None) -> Iterable[Any]:
    flags = [
        func.sum(case((TextLabels.labels[label].as_float() >= FLAG_THRESHOLD, 1), else_=0)).label(field)
        for field, label in FLAG_LABELS.items()
    ]
    averages = [func.avg(TextLabels.labels[label].as_float()).label(label) for label in LIKERT_LABELS]
    stmt = (
        select(Message.user_id, *flags, *averages)
        .select_from(TextLabels)
        .join(Message, Message.id == TextLabels.message_id)
        .where(*_user_messages(base_date))
        .group_by(Message.user_id)
    )
    return session.execute(stmt).mappings()


def compute_troll_counters(
    session: Session, *, base_date: datetime | None
) -> dict[uuid.UUID, dict[str, Any]]:
    stats: dict[uuid.UUID, dict[str, Any]] = {}

    def of(user_id: uuid.UUID) -> dict[str, Any]:
        return stats.setdefault(user_id, {**dict.fromkeys(COUNT_FIELDS, 0), **dict.fromkeys(LIKERT_LABELS)})

    for row in _emoji_counts(session, base_date):
        if any(row[field] for field in EMOJI_FIELDS):
            s = of(row["user_id"])
            for field in EMOJI_FIELDS:
                s[field] = int(row[field] or 0)
    for user_id, n in _spam_prompts(session, base_date):
        of(user_id)["spam_prompts"] = n
    for row in _received_labels(session, base_date):
        s = of(row["user_id"])
        for field in FLAG_LABELS:
            s[field] = int(row[field] or 0)
        for label in LIKERT_LABELS:
            s[label] = float(row[label]) if row[label] is not None else None
    return stats


def _ranks(scores: dict[uuid.UUID, int]) -> dict[uuid.UUID, int]:
    ordered = sorted(scores, key=lambda uid: (-scores[uid], uid))
    return {uid: position for position, uid in enumerate(ordered, start=1)}


def troll_stats_lock(time_frame: TimeFrame) -> str:
    return f"oasst.troll_stats.{time_frame.value}"


def recompute_troll_stats(session: Session, *, time_frame: TimeFrame, now: datetime | None = None) -> int:
    """Rebuild one time frame's trollboard in the caller's transaction; returns the number of rows."""
    lock_named(session, troll_stats_lock(time_frame))
    now = now or utcnow()
    base_date = base_date_for(time_frame, now)
    stats = compute_troll_counters(session, base_date=base_date)
    scores = {uid: troll_score(s) for uid, s in stats.items()}
    ranks = _ranks(scores)
    rows = [
        {
            "time_frame": time_frame.value,
            "user_id": uid,
            "base_date": base_date,
            "modified_date": now,
            "troll_score": scores[uid],
            "rank": ranks[uid],
            **s,
        }
        for uid, s in stats.items()
    ]
    session.execute(delete(TrollStats).where(TrollStats.time_frame == time_frame.value))
    if rows:
        session.execute(insert(TrollStats), rows)
    return len(rows)


def recompute_all_troll_stats(session: Session, *, now: datetime | None = None) -> None:
    for time_frame in TimeFrame:
        recompute_troll_stats(session, time_frame=time_frame, now=now)


_TROLL_FIELDS = (*COUNT_FIELDS, *LIKERT_LABELS, "troll_score", "rank", "base_date", "modified_date")


def _troll_score_row(user: User, stats: TrollStats, highlighted_user_id: uuid.UUID | None) -> TrollScore:
    return TrollScore(
        user_id=user.id,
        highlighted=highlighted_user_id is not None and user.id == highlighted_user_id,
        username=user.username,
        auth_method=user.auth_method,
        display_name=user.display_name,
        last_activity_date=user.last_activity_date,
        enabled=user.enabled,
        deleted=user.deleted,
        show_on_leaderboard=user.show_on_leaderboard,
        **{name: getattr(stats, name) for name in _TROLL_FIELDS},
    )


def get_trollboard(
    session: Session,
    *,
    time_frame: TimeFrame,
    max_count: int = 100,
    enabled: bool | None = None,
    highlighted_user_id: uuid.UUID | None = None,
) -> TrollboardStats:
    """The ``max_count`` users with the highest troll score; ``enabled`` filters active or banned users."""
    stmt = (
        select(User, TrollStats)
        .join(TrollStats, TrollStats.user_id == User.id)
        .where(TrollStats.time_frame == time_frame.value)
    )
    if enabled is not None:
        stmt = stmt.where(User.enabled.is_(enabled))
    stmt = stmt.order_by(TrollStats.rank).limit(max_count)
    board = [_troll_score_row(u, s, highlighted_user_id) for u, s in session.execute(stmt).all()]
    return TrollboardStats(
        time_frame=time_frame.value,
        last_updated=max((s.modified_date for s in board if s.modified_date), default=utcnow()),
        trollboard=board,
    )
