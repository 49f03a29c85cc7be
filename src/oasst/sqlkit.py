"""What every oasst service does the same way with its database: engines with the SQLite pragmas and
transaction discipline oasst relies on, and Alembic upgrades that several processes may start at once.

Used by the backend, the website's account store and the inference server, each with its own tables
and migration history; it imports nothing else of oasst.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text

__all__ = ["make_service_engine", "upgrade_schema"]

# pg_advisory_xact_lock keys: one per migration history, so services sharing a database never wait on
# each other's migrations
MIGRATION_LOCKS = {"backend": 7152651, "web": 7152652, "inference": 7152653}


def make_service_engine(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    pre_ping: bool = False,
    sqlite_begin_immediate: bool = True,
) -> Engine:
    """An engine for ``url``: on SQLite WAL, foreign keys, a generous busy timeout and (by default)
    ``BEGIN IMMEDIATE`` for writers; on PostgreSQL psycopg 3, READ COMMITTED and a bounded pool.

    A transaction started with the execution option ``oasst_read_only=True`` begins a plain (deferred)
    SQLite transaction, so readers never wait for the write lock.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _configure_sqlite(engine, begin_immediate=sqlite_begin_immediate)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=3600,
        pool_pre_ping=pre_ping,
        isolation_level="READ COMMITTED",
    )


def _configure_sqlite(engine: Engine, *, begin_immediate: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        if begin_immediate:
            dbapi_connection.isolation_level = None  # BEGIN is emitted below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    if begin_immediate:

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            # writers take the write lock up front (no lock upgrades, no deadlocks); readers don't block
            read_only = conn.get_execution_options().get("oasst_read_only", False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def upgrade_schema(engine: Engine, migrations_dir: Path, *, lock: str, revision: str = "head") -> None:
    """Run ``migrations_dir``'s Alembic history up to ``revision`` in one transaction. On PostgreSQL an
    advisory lock makes processes that start together wait, then find the work done."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCKS[lock]})"))
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)
