"""Leaderboard, trollboard and cached dashboard rows (recomputed in the background)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from oasst.backend.models.base import Base, JsonType, UTCDateTime, utcnow


class UserStats(Base):
    __tablename__ = "user_stats"
    __table_args__ = (Index("ix_user_stats_frame_score", "time_frame", "leader_score"),)

    time_frame: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), primary_key=True)
    base_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    modified_date: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    leader_score: Mapped[int] = mapped_column(Integer, default=0)
    rank: Mapped[int | None] = mapped_column(Integer)
    prompts: Mapped[int] = mapped_column(Integer, default=0)
    replies_assistant: Mapped[int] = mapped_column(Integer, default=0)
    replies_prompter: Mapped[int] = mapped_column(Integer, default=0)
    labels_simple: Mapped[int] = mapped_column(Integer, default=0)
    labels_full: Mapped[int] = mapped_column(Integer, default=0)
    rankings_total: Mapped[int] = mapped_column(Integer, default=0)
    rankings_good: Mapped[int] = mapped_column(Integer, default=0)
    accepted_prompts: Mapped[int] = mapped_column(Integer, default=0)
    accepted_replies_assistant: Mapped[int] = mapped_column(Integer, default=0)
    accepted_replies_prompter: Mapped[int] = mapped_column(Integer, default=0)
    reply_ranked_1: Mapped[int] = mapped_column(Integer, default=0)
    reply_ranked_2: Mapped[int] = mapped_column(Integer, default=0)
    reply_ranked_3: Mapped[int] = mapped_column(Integer, default=0)


class TrollStats(Base):
    __tablename__ = "troll_stats"
    __table_args__ = (Index("ix_troll_stats_frame_score", "time_frame", "troll_score"),)

    time_frame: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), primary_key=True)
    base_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    modified_date: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    troll_score: Mapped[int] = mapped_column(Integer, default=0)
    rank: Mapped[int | None] = mapped_column(Integer)
    red_flags: Mapped[int] = mapped_column(Integer, default=0)
    upvotes: Mapped[int] = mapped_column(Integer, default=0)
    downvotes: Mapped[int] = mapped_column(Integer, default=0)
    spam_prompts: Mapped[int] = mapped_column(Integer, default=0)
    quality: Mapped[float | None] = mapped_column(Float)
    humor: Mapped[float | None] = mapped_column(Float)
    toxicity: Mapped[float | None] = mapped_column(Float)
    violence: Mapped[float | None] = mapped_column(Float)
    helpfulness: Mapped[float | None] = mapped_column(Float)
    spam: Mapped[int] = mapped_column(Integer, default=0)
    lang_mismach: Mapped[int] = mapped_column(Integer, default=0)  # sic: the wire name of the original
    not_appropriate: Mapped[int] = mapped_column(Integer, default=0)
    pii: Mapped[int] = mapped_column(Integer, default=0)
    hate_speech: Mapped[int] = mapped_column(Integer, default=0)
    sexual_content: Mapped[int] = mapped_column(Integer, default=0)
    political_content: Mapped[int] = mapped_column(Integer, default=0)


class CachedStats(Base):
    __tablename__ = "cached_stats"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    modified_date: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    stats: Mapped[Any] = mapped_column(JsonType)
