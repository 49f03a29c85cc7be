"""The states of a message tree's lifecycle (the original's names, which exports carry)."""

from __future__ import annotations

from enum import StrEnum


class TreeState(StrEnum):
    INITIAL_PROMPT_REVIEW = "initial_prompt_review"
    PROMPT_LOTTERY_WAITING = "prompt_lottery_waiting"
    GROWING = "growing"
    RANKING = "ranking"
    READY_FOR_SCORING = "ready_for_scoring"
    READY_FOR_EXPORT = "ready_for_export"
    SCORING_FAILED = "scoring_failed"
    ABORTED_LOW_GRADE = "aborted_low_grade"
    HALTED_BY_MODERATOR = "halted_by_moderator"
    BACKLOG_RANKING = "backlog_ranking"


# Entering one of these sets ``active=False``. Not final: lottery and backlog trees are re-activated later.
TERMINAL_STATES = frozenset(
    {
        TreeState.READY_FOR_EXPORT,
        TreeState.ABORTED_LOW_GRADE,
        TreeState.SCORING_FAILED,
        TreeState.HALTED_BY_MODERATOR,
        TreeState.BACKLOG_RANKING,
        TreeState.PROMPT_LOTTERY_WAITING,
    }
)
