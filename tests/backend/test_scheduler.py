"""The background scheduler: runs its jobs, survives failing ones, stops, and lets one process run a job."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from oasst.backend.db import Database
from oasst.backend.models import CachedStats, Task, User, UserStats, utcnow
from oasst.backend.scheduler import Job, Scheduler, default_jobs, run_job, start_scheduler, try_lock_named
from oasst.backend.settings import Settings
from tests.backend.factories_stats import StatsFactory, build
from tests.conftest import Keys, make_test_settings


def _wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the scheduler"
        time.sleep(0.05)


def _scheduler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "oasst-scheduler"]


def test_jobs_repeat_failures_are_logged_and_stop_is_clean(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    runs: list[float] = []

    def broken(_: Session) -> None:
        raise RuntimeError("boom")

    scheduler = Scheduler(
        database, [Job("broken", 0.01, broken), Job("counter", 0.01, lambda _: runs.append(time.monotonic()))]
    )
    with caplog.at_level(logging.ERROR, logger="oasst.backend.scheduler"):
        scheduler.start()
        _wait_for(lambda: len(runs) >= 3)
        scheduler.stop(timeout=10)
    assert not scheduler.running
    assert any("broken failed" in r.getMessage() and r.exc_info for r in caplog.records)


def _expired_tasks(f: StatsFactory) -> None:
    user = f.user("worker", streak_days=4, streak_last_day_date=utcnow() - timedelta(days=4))
    user.last_activity_date = utcnow() - timedelta(days=2)
    f.messages(user, 2)
    for done, expiry in [(False, -1), (True, -1), (False, +1)]:
        task = f.label_task(user, mode="simple", done=done)
        task.expiry_date = utcnow() + timedelta(hours=expiry)
    f.session.flush()


def test_start_scheduler_runs_every_default_job(database: Database, settings: Settings, keys: Keys) -> None:
    build(database, keys.trusted, _expired_tasks)

    stop = start_scheduler(database, settings)
    try:
        _wait_for(lambda: database.read(lambda s: s.scalar(select(func.count()).select_from(Task))) == 2)
    finally:
        stop()
    assert _scheduler_threads() == []

    def frames(session: Session) -> set[str]:
        return set(session.scalars(select(UserStats.time_frame)))

    assert database.read(frames) == {"day", "week", "month", "total"}
    assert database.read(lambda s: s.scalar(select(func.count()).select_from(CachedStats))) == 5
    worker = database.read(lambda s: s.scalars(select(User).where(User.username == "worker")).one())
    assert (worker.streak_days, worker.streak_last_day_date) == (None, None)
    assert database.read(lambda s: sorted(t.done for t in s.scalars(select(Task)))) == [False, True]


def test_a_job_locked_by_another_process_is_skipped(database: Database) -> None:
    runs: list[int] = []
    job = Job("exclusive", 60.0, lambda _: runs.append(1))
    if database.engine.dialect.name != "postgresql":
        assert run_job(database, job)  # SQLite serialises writers itself: jobs just run
        assert runs == [1]
        return

    other_process = database.factory()
    try:
        assert try_lock_named(other_process, job.lock_name)
        assert not run_job(database, job)
        assert runs == []
    finally:
        other_process.rollback()
        other_process.close()
    assert run_job(database, job)
    assert runs == [1]


def test_default_jobs_follow_the_settings() -> None:
    database_url = "sqlite:///unused.db"
    names = [job.name for job in default_jobs(make_test_settings(database_url))]
    assert names == [
        "leaderboard.day",
        "leaderboard.week",
        "leaderboard.month",
        "leaderboard.total",
        "cached_stats",
        "streak_reset",
        "expired_tasks",
    ]
    day = {job.name: job.interval_s for job in default_jobs(make_test_settings(database_url))}[
        "leaderboard.day"
    ]
    assert day == 5 * 60
    off = make_test_settings(database_url, stats_intervals={"enabled": False})
    assert [job.name for job in default_jobs(off)] == ["streak_reset", "expired_tasks"]
    no_day = make_test_settings(database_url, stats_intervals={"day": 0})
    assert "leaderboard.day" not in [job.name for job in default_jobs(no_day)]
