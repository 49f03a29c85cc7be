"""``oasst web``: run the website in production (settings from ``OASST_WEB_*`` environment variables)."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Annotated

import typer

from oasst.cli import console, fail, redact_url

if TYPE_CHECKING:
    from fastapi import FastAPI

    from oasst.web.settings import WebSettings

app = typer.Typer(
    name="web",
    help="Serve the website (sign-in, tasks, browsing, moderation) from OASST_WEB_* settings.",
    no_args_is_help=True,
)

FACTORY = "oasst.cli.web_cmds:app_factory"


def register(root: typer.Typer) -> None:
    root.add_typer(app)


def load_web_settings_or_fail() -> WebSettings:
    from pydantic import ValidationError

    from oasst.web.settings import load_web_settings

    try:
        return load_web_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        fail(f"Invalid website setting {where}: {first.get('msg')}", "Check the OASST_WEB_* variables.")


def app_factory() -> FastAPI:
    """Build the website from the environment: what each uvicorn worker process imports."""
    from oasst.web.app import create_app

    return create_app(load_web_settings_or_fail(), migrate=False)


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option(envvar="OASST_WEB_HOST", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="OASST_WEB_PORT", help="Port to listen on.")] = 3000,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            envvar="OASST_WEB_WORKERS",
            help="Worker processes. Default: the number of CPUs.",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the website with uvicorn (production).

    Migrates the website's account tables first. Needs at least OASST_WEB_SECRET_KEY, OASST_WEB_BASE_URL,
    OASST_WEB_DATABASE_URL, OASST_WEB_BACKEND_URL and OASST_WEB_BACKEND_API_KEY (a trusted key from
    `oasst keys create --trusted`); see docs/web/operations.md.
    """
    import uvicorn
    from sqlalchemy.exc import SQLAlchemyError

    from oasst.web.accounts.store import AccountStore, make_account_engine

    settings = load_web_settings_or_fail()
    if not settings.backend_api_key.get_secret_value():
        fail(
            "OASST_WEB_BACKEND_API_KEY is not set.",
            "Create a trusted key with `oasst keys create --trusted`.",
        )
    store = AccountStore(make_account_engine(settings.database_url))
    try:
        with console(stderr=True).status("Migrating the website's account tables ..."):
            store.migrate()
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        fail(f"Could not migrate {redact_url(settings.database_url)}: {reason}")
    finally:
        store.engine.dispose()
    n = workers or os.cpu_count() or 1
    console(stderr=True).print(
        f"Serving the oasst website on http://{host}:{port} with {n} worker(s); backend {settings.backend_url}."
    )
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.run(FACTORY, factory=True, host=host, port=port, workers=n, log_level=log_level)
