"""Database tables of the backend (SQLAlchemy 2, the same schema on PostgreSQL and SQLite)."""

from oasst.backend.models.base import Base, utcnow
from oasst.backend.models.clients import ApiClient, User
from oasst.backend.models.messages import Message, MessageRevision, MessageTreeState
from oasst.backend.models.reactions import FlaggedMessage, Journal, MessageEmoji, MessageReaction, TextLabels
from oasst.backend.models.states import TERMINAL_STATES, TreeState
from oasst.backend.models.stats import CachedStats, TrollStats, UserStats
from oasst.backend.models.tasks import Task

__all__ = [
    "TERMINAL_STATES",
    "ApiClient",
    "Base",
    "CachedStats",
    "FlaggedMessage",
    "Journal",
    "Message",
    "MessageEmoji",
    "MessageReaction",
    "MessageRevision",
    "MessageTreeState",
    "Task",
    "TextLabels",
    "TreeState",
    "TrollStats",
    "User",
    "UserStats",
    "utcnow",
]
