"""Engine, sessions and retried transactions (the backend's pattern, on PostgreSQL and SQLite).

Every state change of a message is one conditional ``UPDATE ... WHERE state = ...``, so concurrent
server processes (a stop request here, a sweeper there, the worker's connection elsewhere) never both
win: the one whose update matched a row publishes the outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, TypeVar

import anyio.to_thread
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from oasst.inference.server.errors import ErrorCode, InferenceError
from oasst.inference.server.settings import Settings

T = TypeVar("T")

_RETRYABLE_PG_CODES = {"40001", "40P01"}


def make_engine(settings: Settings) -> Engine:
    url = settings.database_url
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _configure_sqlite(engine)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_recycle=3600,
        pool_pre_ping=True,
        isolation_level="READ COMMITTED",
    )


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        read_only = conn.get_execution_options().get("oasst_read_only", False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _is_retryable(exc: Exception) -> bool:
    if isinstance(exc, OperationalError | DBAPIError):
        if exc.connection_invalidated:
            return True
        if getattr(getattr(exc, "orig", None), "sqlstate", None) in _RETRYABLE_PG_CODES:
            return True
        return "database is locked" in str(exc)
    return False


class Database:
    """Run reads and retried write transactions; ``awrite``/``aread`` run them in a worker thread."""

    def __init__(self, engine: Engine, *, max_retries: int = 5) -> None:
        self.engine = engine
        self.factory = sessionmaker(engine, expire_on_commit=False, autoflush=False)
        self.max_retries = max_retries

    def write(self, work: Callable[[Session], T]) -> T:
        attempt = 0
        while True:
            session = self.factory()
            try:
                result = work(session)
                session.commit()
                return result
            except IntegrityError:
                session.rollback()
                raise
            except Exception as exc:
                session.rollback()
                if _is_retryable(exc) and attempt < self.max_retries:
                    attempt += 1
                    time.sleep(0.005 * attempt)
                    continue
                if _is_retryable(exc):
                    raise InferenceError(
                        "The database is too busy; retry shortly.",
                        ErrorCode.DATABASE_BUSY,
                        HTTPStatus.SERVICE_UNAVAILABLE,
                        retry_after=1,
                    ) from exc
                raise
            finally:
                session.close()

    def read(self, work: Callable[[Session], T]) -> T:
        session = self.factory()
        try:
            session.connection(execution_options={"oasst_read_only": True})
            return work(session)
        finally:
            session.close()

    async def awrite(self, work: Callable[[Session], T]) -> T:
        return await anyio.to_thread.run_sync(self.write, work)

    async def aread(self, work: Callable[[Session], T]) -> T:
        return await anyio.to_thread.run_sync(self.read, work)

    def dispose(self) -> None:
        self.engine.dispose()
