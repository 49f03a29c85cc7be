"""website accounts, identities and sign-in links

Revision ID: web0001
Revises:
Create Date: 2026-11-26 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "web0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "web_accounts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("display_name", sa.String(256), nullable=False),
        sa.Column("email", sa.String(320), nullable=True, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("tos_version", sa.Integer, nullable=False),
        sa.Column("tasks_done", sa.Integer, nullable=False),
        sa.Column("session_epoch", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "web_identities",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "account_id",
            sa.String(32),
            sa.ForeignKey("web_accounts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("provider", "subject"),
    )
    op.create_index("ix_web_identities_account_id", "web_identities", ["account_id"])
    op.create_table(
        "web_login_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("next_url", sa.String(512), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_web_login_tokens_email", "web_login_tokens", ["email"])


def downgrade() -> None:
    op.drop_table("web_login_tokens")
    op.drop_table("web_identities")
    op.drop_table("web_accounts")
