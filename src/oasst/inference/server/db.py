"""Engine, sessions and retried transactions (the backend's pattern, on PostgreSQL and SQLite).

Every state change of a message is one conditional ``UPDATE ... WHERE state = ...``, so concurrent
server processes (a stop request here, a sweeper there, the worker's connection elsewhere) never both
win: the one whose update matched a row publishes the outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from http import HTTPStatus
from typing import TypeVar

import anyio.to_thread
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from oasst.inference.server.errors import ErrorCode, InferenceError
from oasst.inference.server.settings import Settings
from oasst.sqlkit import make_service_engine

T = TypeVar("T")

_RETRYABLE_PG_CODES = {"40001", "40P01"}


def make_engine(settings: Settings) -> Engine:
    return make_service_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pre_ping=True,
    )


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
