"""What volunteers say about messages: labels, rankings, emojis, and the moderation queue."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, String, Text, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from oasst.backend.models.base import Base, JsonType, UTCDateTime, utcnow


class TextLabels(Base):
    """One label submission. For task labels ``id == task_id``; free labels and reports have no task."""

    __tablename__ = "text_labels"
    __table_args__ = (
        Index("ix_text_labels_message", "message_id"),
        Index("ix_text_labels_user_message", "user_id", "message_id"),
        # one review per user and message, enforced by the database even under concurrent requests
        Index(
            "uq_text_labels_task_review",
            "message_id",
            "user_id",
            unique=True,
            postgresql_where=text("task_id IS NOT NULL"),
            sqlite_where=text("task_id IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("user.id"))
    created_date: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    api_client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_client.id"))
    text: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("message.id", ondelete="CASCADE"))
    labels: Mapped[dict[str, float]] = mapped_column(JsonType)
    task_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    is_report: Mapped[bool] = mapped_column(Boolean, default=False)


class MessageReaction(Base):
    """A ranking ballot (``payload_type='RankingReactionPayload'``) on the ranked replies' parent."""

    __tablename__ = "message_reaction"
    __table_args__ = (Index("ix_message_reaction_message", "message_id"),)

    task_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("user.id"), primary_key=True)
    created_date: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    payload_type: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonType)
    api_client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_client.id"))
    message_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("message.id", ondelete="CASCADE"))


class MessageEmoji(Base):
    """One user's emoji on one message (also the internal ``_skip_*`` codes)."""

    __tablename__ = "message_emoji"
    __table_args__ = (Index("ix_message_emoji_user_emoji", "user_id", "emoji"),)

    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("message.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("user.id"), primary_key=True)
    emoji: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_date: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FlaggedMessage(Base):
    """The moderation queue: every red flag or report upserts its message here."""

    __tablename__ = "flagged_message"

    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("message.id", ondelete="CASCADE"), primary_key=True
    )
    processed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_date: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Journal(Base):
    """Append-only event log (replies, rankings, labels). Ids are time-ordered (uuid7)."""

    __tablename__ = "journal"
    __table_args__ = (Index("ix_journal_user", "user_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    created_date: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("user.id"))
    message_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    api_client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_client.id"))
    event_type: Mapped[str] = mapped_column(String(200))
    event_payload: Mapped[dict[str, Any]] = mapped_column(JsonType)
