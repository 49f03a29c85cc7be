"""Messages, the tree-state row of each tree, and edit history."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from oasst.backend.models.base import Base, JsonType, UTCDateTime, utcnow


class Message(Base):
    """One node of a conversation tree. ``message_tree_id`` is the root's id."""

    __tablename__ = "message"
    __table_args__ = (
        UniqueConstraint("api_client_id", "frontend_message_id"),
        Index("ix_message_tree", "message_tree_id"),
        Index("ix_message_parent", "parent_id"),
        Index("ix_message_user_created", "user_id", "created_date"),
        Index("ix_message_created", "created_date", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("message.id"))
    message_tree_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    task_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("user.id"))
    role: Mapped[str] = mapped_column(String(16))
    api_client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_client.id"))
    frontend_message_id: Mapped[str] = mapped_column(String(200))
    created_date: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    text: Mapped[str] = mapped_column(Text)
    lang: Mapped[str] = mapped_column(String(32), default="en")
    depth: Mapped[int] = mapped_column(Integer, default=0)
    children_count: Mapped[int] = mapped_column(Integer, default=0)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    review_count: Mapped[int] = mapped_column(Integer, default=0)
    review_result: Mapped[bool | None] = mapped_column(Boolean)
    ranking_count: Mapped[int] = mapped_column(Integer, default=0)
    rank: Mapped[int | None] = mapped_column(Integer)
    synthetic: Mapped[bool] = mapped_column(Boolean, default=False)
    edited: Mapped[bool] = mapped_column(Boolean, default=False)
    model_name: Mapped[str | None] = mapped_column(String(1024))
    emojis: Mapped[dict[str, int] | None] = mapped_column(JsonType)
    # Fields of an imported export node that oasst does not model (e.g. ``detoxify``), re-exported as they came.
    extra: Mapped[dict[str, Any] | None] = mapped_column(JsonType)


class MessageTreeState(Base):
    """One row per tree: its lifecycle state and the config snapshot taken when it was created."""

    __tablename__ = "message_tree_state"
    __table_args__ = (
        Index("ix_message_tree_state_state_lang", "state", "lang"),
        Index("ix_message_tree_state_active", "active"),
    )

    message_tree_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("message.id"), primary_key=True)
    goal_tree_size: Mapped[int] = mapped_column(Integer)
    max_depth: Mapped[int] = mapped_column(Integer)
    max_children_count: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(128))
    active: Mapped[bool] = mapped_column(Boolean)
    origin: Mapped[str | None] = mapped_column(String(1024))
    won_prompt_lottery_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lang: Mapped[str] = mapped_column(String(32))
    created_date: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Import provenance that the export format carries per tree (``origin`` plus unknown tree fields).
    extra: Mapped[dict[str, Any] | None] = mapped_column(JsonType)


class MessageRevision(Base):
    """One version of a message's text: the original on first edit, then every edit."""

    __tablename__ = "message_revision"
    __table_args__ = (Index("ix_message_revision_message", "message_id", "created_date"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("message.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("user.id"))
    text: Mapped[str] = mapped_column(Text)
    created_date: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
