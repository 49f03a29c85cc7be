"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from oasst.backend.migrate import current_revision
from oasst.backend.models import Base


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        assert current_revision(engine) is not None
        ours = set(Base.metadata.tables)

        def backend_only(name: str | None, type_: str, parent: dict[str, str | None]) -> bool:
            # the website's and the chat server's tables may share the database: not the backend's business
            table = name if type_ == "table" else parent.get("table_name")
            return table is None or table in ours

        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"include_name": backend_only})
            diff = compare_metadata(context, Base.metadata)
        # the full-text index exists only on PostgreSQL and only in the migration (an expression index)
        diff = [d for d in diff if not (d[0] == "remove_index" and d[1].name == "ix_message_text_fts")]
        assert diff == []
    finally:
        engine.dispose()
