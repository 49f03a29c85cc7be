"""Tables of the inference server (their own metadata; every name starts with ``inf_``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class InfBase(DeclarativeBase):
    pass


class User(InfBase):
    """A person as the website knows them (id and name come from the signed user token)."""

    __tablename__ = "inf_users"
    id: Mapped[str] = mapped_column(String(256), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Chat(InfBase):
    __tablename__ = "inf_chats"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # chats of the website's users; None for the hidden one-off chats of /v1 API requests
    user_id: Mapped[str | None] = mapped_column(ForeignKey("inf_users.id"), nullable=True)
    api_key_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    title: Mapped[str | None] = mapped_column(String(200), nullable=True)
    hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    allow_data_use: Mapped[bool] = mapped_column(Boolean, default=True)
    system_prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    custom_instructions: Mapped[str | None] = mapped_column(Text, nullable=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index("ix_inf_chats_user_id_id", "user_id", "id"),)


class Message(InfBase):
    __tablename__ = "inf_messages"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    chat_id: Mapped[str] = mapped_column(ForeignKey("inf_chats.id"), index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("inf_messages.id"), nullable=True)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16))
    model: Mapped[str | None] = mapped_column(String(256), nullable=True)
    sampling: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    score: Mapped[int] = mapped_column(Integer, default=0)
    draft_group: Mapped[str | None] = mapped_column(String(36), nullable=True)
    selected: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    finish_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    worker_key_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    worker_session: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_inf_messages_state_queued_at", "state", "queued_at"),)


class Report(InfBase):
    __tablename__ = "inf_reports"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("inf_messages.id"), index=True)
    user_id: Mapped[str] = mapped_column(String(256))
    report_type: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(InfBase):
    """A worker key or an OpenAI-API key; only the SHA-256 of the key is stored."""

    __tablename__ = "inf_keys"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))  # worker | api
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


ALL_TABLES = [User, Chat, Message, Report, ApiKey]
