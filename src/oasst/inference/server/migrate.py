"""Apply the inference server's Alembic migrations (own version table ``inf_alembic_version``)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from oasst.sqlkit import upgrade_schema

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
VERSION_TABLE = "inf_alembic_version"


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database behind ``engine``; concurrent starts on PostgreSQL wait for each other."""
    upgrade_schema(engine, MIGRATIONS_DIR, lock="inference", revision=revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()
