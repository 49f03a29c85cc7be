"""Engines, sessions, transactions and row locks, the same API on PostgreSQL and SQLite.

Concurrency model: every write to a tree first locks that tree's ``message_tree_state`` row
(``SELECT ... FOR UPDATE`` on PostgreSQL). On SQLite each transaction starts with ``BEGIN IMMEDIATE``,
so writers are serialised by the database itself. Either way the invariants of a tree (children
counts, tree size, one reply per user per parent, state) are checked and changed under one lock.
"""

from __future__ import annotations

import functools
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any, TypeVar

from sqlalchemy import Engine, bindparam, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from oasst.backend.errors import ErrorCode, OasstError
from oasst.backend.models import MessageTreeState
from oasst.backend.settings import Settings
from oasst.sqlkit import make_service_engine

T = TypeVar("T")

# PostgreSQL SQLSTATEs worth retrying: serialization failure, deadlock.
_RETRYABLE_PG_CODES = {"40001", "40P01"}


def make_engine(settings: Settings) -> Engine:
    """Create the engine for ``settings.database_url`` with the pragmas/isolation oasst relies on.

    No pre-ping on PostgreSQL (a round trip per transaction): a connection found dead mid-transaction is
    invalidated by SQLAlchemy and the transaction is retried on a fresh one (:func:`run_transaction`).
    """
    return make_service_engine(
        settings.database_url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow
    )


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, autoflush=False)


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def lock_tree(session: Session, tree_id: uuid.UUID, *, skip_locked: bool = False) -> MessageTreeState | None:
    """Lock a tree's state row for the rest of the transaction and return it.

    Returns None if the tree has no state row, or (with ``skip_locked``) if another transaction holds
    the lock right now: the dispenser then offers another tree instead of waiting in line.
    """
    mode = ("skip" if skip_locked else "wait") if is_postgres(session) else "none"
    return session.scalars(_lock_tree_stmt(mode), {"tree_id": tree_id}).one_or_none()


@functools.cache
def _lock_tree_stmt(mode: str) -> Any:
    # built once: constructing statements costs more CPU than running these
    stmt = (
        select(MessageTreeState)
        .where(MessageTreeState.message_tree_id == bindparam("tree_id"))
        .execution_options(populate_existing=True)
    )
    if mode == "none":
        return stmt
    return stmt.with_for_update(skip_locked=mode == "skip")


def try_lock_tree(session: Session, tree_id: uuid.UUID, *, skip_locked: bool = False) -> bool:
    """``lock_tree`` for callers that only need the lock: one Core statement, no ORM object loaded."""
    mode = ("skip" if skip_locked else "wait") if is_postgres(session) else "none"
    row = session.connection().execute(_lock_tree_id_stmt(mode), {"tree_id": tree_id}).first()
    return row is not None


@functools.cache
def _lock_tree_id_stmt(mode: str) -> Any:
    stmt = select(MessageTreeState.message_tree_id).where(
        MessageTreeState.message_tree_id == bindparam("tree_id")
    )
    if mode == "none":
        return stmt
    return stmt.with_for_update(skip_locked=mode == "skip")


def lock_named(session: Session, name: str) -> None:
    """A transaction-scoped mutex by name (advisory lock on PostgreSQL; SQLite is already serialised)."""
    if is_postgres(session):
        key = zlib.crc32(name.encode()) - 2**31
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


def _is_retryable(exc: Exception) -> bool:
    if isinstance(exc, OperationalError | DBAPIError):
        if exc.connection_invalidated:  # the server restarted or dropped us: a new connection will do
            return True
        code = getattr(getattr(exc, "orig", None), "sqlstate", None)
        if code in _RETRYABLE_PG_CODES:
            return True
        return "database is locked" in str(exc)
    return False


def run_transaction(factory: sessionmaker[Session], work: Callable[[Session], T], *, retries: int = 5) -> T:
    """Run ``work`` in one transaction, committing at the end and retrying on deadlocks/serialization.

    Domain errors roll everything back, so a failed request leaves nothing half-written.
    """
    attempt = 0
    while True:
        session = factory()
        try:
            result = work(session)
            session.commit()
            return result
        except IntegrityError:
            session.rollback()
            raise
        except Exception as exc:
            session.rollback()
            if _is_retryable(exc) and attempt < retries:
                attempt += 1
                time.sleep(0.005 * attempt)
                continue
            if _is_retryable(exc):
                raise OasstError(
                    "The database was too busy to complete the request; retry shortly.",
                    ErrorCode.DATABASE_MAX_RETRIES_EXHAUSTED,
                    HTTPStatus.SERVICE_UNAVAILABLE,
                ) from exc
            raise
        finally:
            session.close()


@contextmanager
def read_session(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session for reads; closed (its transaction rolled back) at the end, objects stay loaded."""
    session = factory()
    try:
        session.connection(execution_options={"oasst_read_only": True})
        yield session
    finally:
        session.close()


class Database:
    """The backend's handle on its database: run reads and retried write transactions."""

    def __init__(self, engine: Engine, *, max_retries: int = 5) -> None:
        self.engine = engine
        self.factory = make_session_factory(engine)
        self.max_retries = max_retries

    def write(self, work: Callable[[Session], T]) -> T:
        return run_transaction(self.factory, work, retries=self.max_retries)

    def read(self, work: Callable[[Session], T]) -> T:
        with read_session(self.factory) as session:
            return work(session)

    def dispose(self) -> None:
        self.engine.dispose()
