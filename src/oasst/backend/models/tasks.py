"""Every unit of work handed to a volunteer, with a snapshot of exactly what was shown."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from oasst.backend.models.base import Base, JsonType, UTCDateTime, utcnow


class Task(Base):
    __tablename__ = "task"
    __table_args__ = (
        UniqueConstraint("api_client_id", "frontend_message_id"),
        Index("ix_task_user_created", "user_id", "created_date"),
        Index("ix_task_parent_open", "parent_message_id", "done", "skipped"),
        Index("ix_task_expiry", "expiry_date"),
        # open reply tasks reserve room in their tree (the dispenser counts them per growing tree)
        Index("ix_task_tree_open", "message_tree_id", "done", "skipped"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    created_date: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expiry_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("user.id"))
    api_client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_client.id"))
    task_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonType)
    ack: Mapped[bool | None] = mapped_column(Boolean)
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    skipped: Mapped[bool] = mapped_column(Boolean, default=False)
    skip_reason: Mapped[str | None] = mapped_column(Text)
    frontend_message_id: Mapped[str | None] = mapped_column(String(200))
    message_tree_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    parent_message_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    collective: Mapped[bool] = mapped_column(Boolean, default=False)
