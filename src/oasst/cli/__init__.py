"""``oasst ...``: one command line for serving, databases, API keys, simulation and data.

Command modules import only Typer at module level; everything heavy (the backend, SQLAlchemy, uvicorn)
is imported inside the command that needs it, so ``oasst --help`` stays fast. Nothing imports this
package except the console script.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from rich.console import Console
    from sqlalchemy import Engine

    from oasst.backend.settings import Settings

__all__ = ["console", "err_console", "fail", "load_backend_settings", "open_engine", "redact_url"]

_consoles: dict[bool, Console] = {}


def console(stderr: bool = False) -> Console:
    """The shared Rich console (stdout, or stderr for diagnostics)."""
    if stderr not in _consoles:
        from rich.console import Console

        _consoles[stderr] = Console(stderr=stderr, highlight=False)
    return _consoles[stderr]


def err_console() -> Console:
    return console(stderr=True)


def fail(message: str, hint: str | None = None, code: int = 1) -> NoReturn:
    """Print a user error (and what to do about it) on stderr and exit non-zero, without a traceback."""
    import typer
    from rich.markup import escape

    err = err_console()
    err.print(f"[bold red]Error:[/] {escape(message)}", soft_wrap=True)  # paths stay whole, copyable
    if hint:
        err.print(f"[yellow]→[/] {escape(hint)}", soft_wrap=True)
    raise typer.Exit(code)


def redact_url(url: str) -> str:
    """A database URL without its password, for messages."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def load_backend_settings(**overrides: object) -> Settings:
    """Backend settings from the environment plus overrides; invalid settings end the command cleanly."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from oasst.backend.settings import load_settings

    hint = "Check the OASST_* environment variables and the command's options."
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:  # an environment variable that cannot be parsed at all
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        fail(f"Invalid backend settings: {exc}{cause}", hint)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        fail(f"Invalid backend settings: {problems}", hint)


def open_engine(settings: Settings, *, must_exist: bool = False) -> Engine:
    """An engine for the settings' database, checked by connecting once.

    For SQLite the file's folder is created (or, with ``must_exist``, a missing file is an error).
    """
    from pathlib import Path

    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from oasst.backend.db import make_engine

    shown = redact_url(settings.database_url)
    try:
        url = make_url(settings.database_url)
    except ArgumentError:
        fail(
            f"Not a database URL: {settings.database_url!r}",
            "Use sqlite:///path/to/oasst.db or postgresql+psycopg://user:password@host/dbname.",
        )
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        path = Path(url.database)
        if must_exist and not path.exists():
            fail(f"There is no database at {path}.", "Create it with: oasst db upgrade --database-url ...")
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = make_engine(settings)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (SQLAlchemyError, ModuleNotFoundError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        fail(
            f"Could not connect to the database {shown}: {reason}",
            "Check --database-url or OASST_DATABASE_URL, and that the database server is running.",
        )
    return engine
