"""``oasst db``: apply and inspect the database migrations."""

from __future__ import annotations

from typing import Annotated

import typer

from oasst.cli import console, fail, load_backend_settings, open_engine, redact_url

app = typer.Typer(
    name="db",
    help="Create or upgrade the backend database (Alembic migrations; PostgreSQL or SQLite).",
    no_args_is_help=True,
)

DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="OASST_DATABASE_URL",
        help="SQLAlchemy URL, e.g. sqlite:///oasst.db or postgresql+psycopg://user:pw@host/db. "
        "Default: OASST_DATABASE_URL, else the backend's default.",
        show_default=False,
    ),
]


def register(root: typer.Typer) -> None:
    root.add_typer(app)


def head_revision() -> str | None:
    """The newest migration this version of oasst ships."""
    from alembic.script import ScriptDirectory

    from oasst.backend.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


@app.command("upgrade")
def upgrade_command(
    database_url: DatabaseUrlOption = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Create the tables or migrate an existing database to the newest schema."""
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from oasst.backend.migrate import current_revision, upgrade

    settings = load_backend_settings(database_url=database_url)
    shown = redact_url(settings.database_url)
    engine = open_engine(settings)
    try:
        before = current_revision(engine)
        with console().status(f"Migrating {shown} ..."):
            upgrade(engine, revision)
        after = current_revision(engine)
    except CommandError as exc:
        fail(f"Migration failed: {exc}", "Check --revision (or leave it out to go to the newest schema).")
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        fail(f"Migration of {shown} failed: {reason}", "Nothing was changed; fix the cause and run it again.")
    finally:
        engine.dispose()
    if before == after:
        console().print(f"[green]✓[/] {shown} is already at revision [bold]{after}[/].")
    else:
        console().print(f"[green]✓[/] Migrated {shown}: {before or '(empty)'} → [bold]{after}[/].")


@app.command("current")
def current_command(database_url: DatabaseUrlOption = None) -> None:
    """Show the database's schema revision and whether it needs `oasst db upgrade`."""
    from oasst.backend.migrate import current_revision

    settings = load_backend_settings(database_url=database_url)
    engine = open_engine(settings, must_exist=True)
    try:
        current = current_revision(engine)
    finally:
        engine.dispose()
    head = head_revision()
    shown = redact_url(settings.database_url)
    if current is None:
        console().print(f"{shown}: [yellow]no schema yet[/] (newest is {head}). Run: oasst db upgrade")
        raise typer.Exit(1)
    if current != head:
        console().print(f"{shown}: revision {current}, [yellow]behind[/] {head}. Run: oasst db upgrade")
        raise typer.Exit(1)
    console().print(f"{shown}: revision [bold]{current}[/] [green](up to date)[/]")
