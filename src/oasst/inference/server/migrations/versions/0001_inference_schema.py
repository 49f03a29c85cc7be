"""inference server: users, chats, messages, reports, keys

Revision ID: inf0001
Revises:
Create Date: 2026-11-26 13:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "inf0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "inf_users",
        sa.Column("id", sa.String(256), primary_key=True),
        sa.Column("display_name", sa.String(256), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "inf_chats",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(256), sa.ForeignKey("inf_users.id"), nullable=True),
        sa.Column("api_key_id", sa.String(36), nullable=True),
        sa.Column("title", sa.String(200), nullable=True),
        sa.Column("hidden", sa.Boolean, nullable=False),
        sa.Column("allow_data_use", sa.Boolean, nullable=False),
        sa.Column("system_prompt", sa.Text, nullable=True),
        sa.Column("custom_instructions", sa.Text, nullable=True),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("modified_at", TS, nullable=False),
    )
    op.create_index("ix_inf_chats_user_id_id", "inf_chats", ["user_id", "id"])
    op.create_table(
        "inf_messages",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("chat_id", sa.String(36), sa.ForeignKey("inf_chats.id"), nullable=False),
        sa.Column("parent_id", sa.String(36), sa.ForeignKey("inf_messages.id"), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("model", sa.String(256), nullable=True),
        sa.Column("sampling", sa.JSON, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("score", sa.Integer, nullable=False),
        sa.Column("draft_group", sa.String(36), nullable=True),
        sa.Column("selected", sa.Boolean, nullable=True),
        sa.Column("finish_reason", sa.String(16), nullable=True),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("worker_key_id", sa.String(36), nullable=True),
        sa.Column("worker_session", sa.String(36), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("queued_at", TS, nullable=True),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
    )
    op.create_index("ix_inf_messages_chat_id", "inf_messages", ["chat_id"])
    op.create_index("ix_inf_messages_state_queued_at", "inf_messages", ["state", "queued_at"])
    op.create_table(
        "inf_reports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.String(36), sa.ForeignKey("inf_messages.id"), nullable=False),
        sa.Column("user_id", sa.String(256), nullable=False),
        sa.Column("report_type", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_inf_reports_message_id", "inf_reports", ["message_id"])
    op.create_table(
        "inf_keys",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in ("inf_keys", "inf_reports", "inf_messages", "inf_chats", "inf_users"):
        op.drop_table(table)
