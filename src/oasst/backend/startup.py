"""What the backend does when it starts: the official key, tree-state repair, background jobs."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from oasst.backend.db import Database
from oasst.backend.services import clients as clients_service
from oasst.backend.settings import Settings


def on_startup(app: FastAPI) -> Callable[[], None]:
    """Run the startup work; return a function that stops what was started."""
    settings: Settings = app.state.settings
    database: Database = app.state.database
    if settings.official_web_api_key is not None:
        key = settings.official_web_api_key.get_secret_value()
        database.write(
            lambda s: clients_service.ensure_api_client(
                s, api_key=key, description="official website", trusted=True
            )
        )
    stoppers: list[Callable[[], None]] = []
    if settings.run_scheduler:
        from oasst.backend.scheduler import start_scheduler

        stoppers.append(start_scheduler(database, settings))

    def stop_all() -> None:
        for stop in stoppers:
            stop()

    return stop_all
