"""API clients (frontends) and the users they bring, namespaced per client."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from oasst.backend.models.base import Base, UTCDateTime, utcnow


class ApiClient(Base):
    """One frontend (website, bot, script). Only the SHA-256 of its key is stored."""

    __tablename__ = "api_client"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(256), default="")
    admin_email: Mapped[str | None] = mapped_column(String(256))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    trusted: Mapped[bool] = mapped_column(Boolean, default=False)
    frontend_type: Mapped[str | None] = mapped_column(String(256))
    created_date: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class User(Base):
    """An end user as a frontend knows them: ``(api_client, username, auth_method)``."""

    __tablename__ = "user"
    __table_args__ = (
        UniqueConstraint("api_client_id", "username", "auth_method"),
        Index("ix_user_display_name_id", "display_name", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(128))
    auth_method: Mapped[str] = mapped_column(String(128), default="local")
    display_name: Mapped[str] = mapped_column(String(256))
    api_client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_client.id"))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    notes: Mapped[str] = mapped_column(Text, default="")
    show_on_leaderboard: Mapped[bool] = mapped_column(Boolean, default=True)
    created_date: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    streak_last_day_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    streak_days: Mapped[int | None] = mapped_column(Integer)
    last_activity_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    tos_acceptance_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
