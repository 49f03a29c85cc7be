"""index open tasks by tree (the dispenser's tree-room query)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 11:15:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_task_tree_open", "task", ["message_tree_id", "done", "skipped"])


def downgrade() -> None:
    op.drop_index("ix_task_tree_open", table_name="task")
