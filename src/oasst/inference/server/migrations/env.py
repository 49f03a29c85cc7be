"""Alembic environment of the inference server (its own version table, beside the backend's)."""

from __future__ import annotations

from alembic import context

from oasst.inference.server.migrate import VERSION_TABLE
from oasst.inference.server.models import InfBase


def run_migrations() -> None:
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=InfBase.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
