"""Wire models of leaderboards, trollboards and system/cached stats (``/leaderboards``, ``/trollboards``,
``/stats``, ``/users/{id}/stats``).

Field names and shapes follow the original Open Assistant backend so its frontends work unchanged.
"""

from __future__ import annotations

import enum
from datetime import datetime
from uuid import UUID

from pydantic import BaseModel


def _level_thresholds(baseline: float = 3, alpha: float = 1.1521, max_level: int = 100) -> list[int]:
    """Score needed per level: ``[0] + round(cumsum(arange(1, max_level) * alpha + baseline))``."""
    levels = [0]
    total = 0.0
    for step in range(1, max_level):
        total += step * alpha + baseline
        levels.append(round(total))
    return levels


# The original's levels: 0, 4, 9, 16, 24, 32, 42, ... (100 entries); level n needs LEVEL_THRESHOLDS[n - 1].
LEVEL_THRESHOLDS: list[int] = _level_thresholds()


def level_progress(score: int) -> tuple[int, int, int]:
    """``(level, points of this level, points of the next level)``; at level 100 both are the last."""
    level = sum(1 for threshold in LEVEL_THRESHOLDS if threshold <= score)
    this = LEVEL_THRESHOLDS[level - 1]
    following = LEVEL_THRESHOLDS[min(level, len(LEVEL_THRESHOLDS) - 1)]
    return level, this, following


class TimeFrame(enum.StrEnum):
    """The periods a leaderboard or trollboard covers."""

    day = "day"
    week = "week"
    month = "month"
    total = "total"


class UserScore(BaseModel):
    """One user's row of a leaderboard (all counters cover the board's time frame)."""

    rank: int | None = None
    user_id: UUID
    highlighted: bool = False
    username: str
    auth_method: str
    display_name: str

    leader_score: int = 0
    level: int = 0  # 0 without stats, else 1..100

    base_date: datetime | None = None
    modified_date: datetime | None = None

    prompts: int = 0
    replies_assistant: int = 0
    replies_prompter: int = 0
    labels_simple: int = 0
    labels_full: int = 0
    rankings_total: int = 0
    rankings_good: int = 0

    accepted_prompts: int = 0
    accepted_replies_assistant: int = 0
    accepted_replies_prompter: int = 0

    reply_ranked_1: int = 0
    reply_ranked_2: int = 0
    reply_ranked_3: int = 0

    streak_last_day_date: datetime | None = None
    streak_days: int | None = None
    last_activity_date: datetime | None = None


class LeaderboardStats(BaseModel):
    time_frame: str
    last_updated: datetime
    leaderboard: list[UserScore]


class TrollScore(BaseModel):
    """One user's row of the trollboard: signals others gave on the user's messages."""

    rank: int | None = None
    user_id: UUID
    highlighted: bool = False
    username: str
    auth_method: str
    display_name: str
    last_activity_date: datetime | None = None
    enabled: bool
    deleted: bool
    show_on_leaderboard: bool

    troll_score: int = 0

    base_date: datetime | None = None
    modified_date: datetime | None = None

    red_flags: int = 0
    upvotes: int = 0
    downvotes: int = 0

    spam_prompts: int = 0

    quality: float | None = None
    humor: float | None = None
    toxicity: float | None = None
    violence: float | None = None
    helpfulness: float | None = None

    spam: int = 0
    lang_mismach: int = 0  # sic: the original's wire name
    not_appropriate: int = 0
    pii: int = 0
    hate_speech: int = 0
    sexual_content: int = 0
    political_content: int = 0


class TrollboardStats(BaseModel):
    time_frame: str
    last_updated: datetime
    trollboard: list[TrollScore]


class SystemStats(BaseModel):
    """Message counts: all, active (not deleted) overall and per language, deleted, and trees (roots)."""

    all: int = 0
    active: int = 0
    active_by_lang: dict[str, int] = {}
    deleted: int = 0
    message_trees: int = 0


class TreeMessageCountStats(BaseModel):
    """Size and age of one tree's non-deleted messages."""

    message_tree_id: UUID
    state: str
    depth: int
    oldest: datetime
    youngest: datetime
    count: int
    goal_tree_size: int


class TreeManagerStats(BaseModel):
    state_counts: dict[str, int]
    message_counts: list[TreeMessageCountStats]


class CachedStatsName(enum.StrEnum):
    human_messages_by_lang = "human_messages_by_lang"
    human_messages_by_role = "human_messages_by_role"
    message_trees_by_state = "message_trees_by_state"
    message_trees_states_by_lang = "message_trees_states_by_lang"
    users_accepted_tos = "users_accepted_tos"


class CachedStatsResponse(BaseModel):
    name: CachedStatsName | str
    last_updated: datetime
    stats: dict[str, object] | list[object]


class AllCachedStatsResponse(BaseModel):
    stats_by_name: dict[str, CachedStatsResponse]
