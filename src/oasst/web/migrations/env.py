"""Alembic environment of the website's account store (its own version table)."""

from __future__ import annotations

from alembic import context

from oasst.web.accounts.models import WebBase

VERSION_TABLE = "web_alembic_version"


def run_migrations() -> None:
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=WebBase.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
