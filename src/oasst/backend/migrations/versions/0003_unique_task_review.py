"""one task review per user and message (partial unique index)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 11:35:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "uq_text_labels_task_review",
        "text_labels",
        ["message_id", "user_id"],
        unique=True,
        postgresql_where=sa.text("task_id IS NOT NULL"),
        sqlite_where=sa.text("task_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_text_labels_task_review", table_name="text_labels")
