"""Background jobs of the backend: leaderboards, trollboards, cached stats, streaks, expired tasks.

:func:`start_scheduler` starts one daemon thread that runs each due job in its own transaction and
session, so requests never wait for it (on SQLite a job holds the write lock only while it writes).

| job | every |
| --- | --- |
| ``leaderboard.<frame>``: user stats + troll stats of day/week/month/total | ``stats_intervals.<frame>`` min |
| ``cached_stats`` | ``stats_intervals.cached_stats`` min |
| ``streak_reset``: end streaks after 36 h without activity | 4 h |
| ``expired_tasks``: delete expired tasks that were never done | 1 h |

Every job runs once when the scheduler starts, then at its interval. An interval of 0 (or
``stats_intervals.enabled = false`` for the stats jobs) switches a job off.

With several backend processes on one PostgreSQL database, a job first tries a transaction-scoped
advisory lock named after it (``pg_try_advisory_xact_lock``): the process that gets it runs the job, the
others skip this round instead of queueing up behind it. On SQLite (one process) jobs just run. A job
that fails is logged and retried at its next interval; it never stops the thread.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, text
from sqlalchemy.orm import Session

from oasst.backend.db import Database, is_postgres
from oasst.backend.models import Task, utcnow
from oasst.backend.services import leaderboards, system_stats, troll_stats
from oasst.backend.settings import Settings
from oasst.protocol.stats import TimeFrame

__all__ = ["Job", "Scheduler", "default_jobs", "delete_expired_tasks", "start_scheduler", "try_lock_named"]

log = logging.getLogger("oasst.backend.scheduler")

STREAK_RESET_INTERVAL_S = 4 * 3600.0
EXPIRED_TASKS_INTERVAL_S = 3600.0


@dataclass(frozen=True)
class Job:
    """A unit of background work: ``run(session)`` inside one transaction, every ``interval_s`` seconds."""

    name: str
    interval_s: float
    run: Callable[[Session], object]

    @property
    def lock_name(self) -> str:
        return f"oasst.job.{self.name}"


def try_lock_named(session: Session, name: str) -> bool:
    """Take the transaction-scoped lock ``name`` if free; False if another transaction holds it.

    Uses the same key as :func:`oasst.backend.db.lock_named`, so the two exclude each other. SQLite
    serialises writers itself: always True there.
    """
    if not is_postgres(session):
        return True
    key = zlib.crc32(name.encode()) - 2**31
    return bool(session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}).scalar())


def delete_expired_tasks(session: Session, *, now: datetime | None = None) -> int:
    """Delete tasks past their expiry date that were never done; returns how many."""
    stmt = delete(Task).where(Task.expiry_date < (now or utcnow()), Task.done.is_(False))
    count: int = session.execute(stmt.execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
    return count


def run_job(database: Database, job: Job) -> bool:
    """Run ``job`` once in its own transaction; False if skipped (lock held elsewhere) or failed."""

    def work(session: Session) -> bool:
        if not try_lock_named(session, job.lock_name):
            return False
        job.run(session)
        return True

    started = time.monotonic()
    try:
        ran = database.write(work)
    except Exception:
        log.exception("background job %s failed", job.name)
        return False
    if ran:
        log.info("background job %s done in %.2f s", job.name, time.monotonic() - started)
    else:
        log.debug("background job %s skipped: another process is running it", job.name)
    return ran


def _stats_job(time_frame: TimeFrame) -> Callable[[Session], object]:
    def run(session: Session) -> None:
        leaderboards.recompute_user_stats(session, time_frame=time_frame)
        troll_stats.recompute_troll_stats(session, time_frame=time_frame)

    return run


def default_jobs(settings: Settings) -> list[Job]:
    """The backend's jobs with intervals from ``settings`` (jobs with a zero interval are left out)."""
    intervals = settings.stats_intervals
    jobs: list[Job] = []
    if intervals.enabled:
        minutes = {
            TimeFrame.day: intervals.day,
            TimeFrame.week: intervals.week,
            TimeFrame.month: intervals.month,
            TimeFrame.total: intervals.total,
        }
        jobs += [Job(f"leaderboard.{tf.value}", m * 60.0, _stats_job(tf)) for tf, m in minutes.items()]
        jobs.append(Job("cached_stats", intervals.cached_stats * 60.0, system_stats.update_cached_stats))
    jobs.append(Job("streak_reset", STREAK_RESET_INTERVAL_S, leaderboards.reset_streaks))
    jobs.append(Job("expired_tasks", EXPIRED_TASKS_INTERVAL_S, delete_expired_tasks))
    return [job for job in jobs if job.interval_s > 0]


class Scheduler:
    """One daemon thread running due jobs one after another until :meth:`stop`."""

    def __init__(self, database: Database, jobs: list[Job]) -> None:
        self.database = database
        self.jobs = list(jobs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="oasst-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the thread to stop and wait for it (a job in progress finishes first)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("background scheduler still busy after %.0f s; leaving it behind", timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        due = {job.name: time.monotonic() for job in self.jobs}
        while not self._stop.is_set():
            for job in self.jobs:
                if self._stop.is_set():
                    return
                if time.monotonic() >= due[job.name]:
                    run_job(self.database, job)
                    due[job.name] = time.monotonic() + job.interval_s
            if not due:
                self._stop.wait()
                return
            self._stop.wait(max(0.0, min(due.values()) - time.monotonic()))


def start_scheduler(database: Database, settings: Settings) -> Callable[[], None]:
    """Start the background jobs; returns the function that stops them."""
    scheduler = Scheduler(database, default_jobs(settings))
    scheduler.start()
    log.info("background scheduler started with jobs: %s", ", ".join(job.name for job in scheduler.jobs))
    return scheduler.stop
