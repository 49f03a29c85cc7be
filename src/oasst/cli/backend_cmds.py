"""``oasst backend``: run the backend API in production (settings from ``OASST_*`` environment variables)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from oasst.cli import console, fail, load_backend_settings, open_engine, redact_url

if TYPE_CHECKING:
    from fastapi import FastAPI

    from oasst.backend.settings import Settings

app = typer.Typer(
    name="backend",
    help="Serve the data-collection backend (/api/v1) from OASST_* settings.",
    no_args_is_help=True,
)

FACTORY = "oasst.cli.backend_cmds:app_factory"


def register(root: typer.Typer) -> None:
    root.add_typer(app)


def app_factory() -> FastAPI:
    """Build the backend from the environment: what each uvicorn worker process imports."""
    from oasst.backend.app import create_app
    from oasst.backend.settings import load_settings

    return create_app(load_settings())


def check_startup(settings: Settings) -> None:
    """Migrate once before the workers start (their own start-up check is then a no-op), and fail early,
    with a clear message, on what would otherwise crash every worker: the database and Redis."""
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from oasst.backend.migrate import upgrade

    engine = open_engine(settings)
    try:
        with console(stderr=True).status("Applying database migrations ..."):
            upgrade(engine)
    except (CommandError, SQLAlchemyError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        fail(f"Could not migrate {redact_url(settings.database_url)}: {reason}")
    finally:
        engine.dispose()
    if settings.redis_url:
        import redis

        try:
            redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3).ping()
        except redis.RedisError as exc:
            fail(
                f"Could not reach Redis at {redact_url(settings.redis_url)}: {exc}",
                "Start Redis or unset OASST_REDIS_URL to use in-memory rate limits (one process only).",
            )


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option(envvar="OASST_HOST", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="OASST_PORT", help="Port to listen on.")] = 8080,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            envvar="OASST_WORKERS",
            help="Worker processes. Default: the number of CPUs.",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    access_log: Annotated[
        bool, typer.Option(help="Log every request (costs CPU; a load balancer usually logs them).")
    ] = False,
) -> None:
    """Serve the backend API with uvicorn (production).

    Applies database migrations first. Configure it with OASST_* environment variables: OASST_DATABASE_URL,
    OASST_REDIS_URL (shared rate limits across workers and replicas), OASST_ROOT_TOKENS,
    OASST_OFFICIAL_WEB_API_KEY, ... (see oasst.backend.settings).
    """
    import uvicorn

    settings = load_backend_settings()
    n = workers or os.cpu_count() or 1
    if n > 1 and not settings.redis_url:
        console(stderr=True).print(
            f"[yellow]Warning:[/] {n} workers without OASST_REDIS_URL: "
            "each process keeps its own rate limits."
        )
    check_startup(settings)
    console(stderr=True).print(
        f"Serving the oasst backend on http://{host}:{port} with {n} worker(s); "
        f"database {redact_url(settings.database_url)}."
    )
    try:
        if n == 1:
            uvicorn.run(app_factory(), host=host, port=port, log_level=log_level, access_log=access_log)
        else:
            uvicorn.run(
                FACTORY,
                factory=True,
                host=host,
                port=port,
                workers=n,
                log_level=log_level,
                access_log=access_log,
            )
    except KeyboardInterrupt:
        pass
