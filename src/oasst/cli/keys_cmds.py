"""``oasst keys``: API keys (API clients) of the backend, managed directly in its database."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from oasst.cli import console, fail, load_backend_settings, open_engine
from oasst.cli.db_cmds import DatabaseUrlOption

if TYPE_CHECKING:
    from sqlalchemy import Engine

app = typer.Typer(
    name="keys",
    help="Create and list the backend's API keys (one per frontend, bot or script).",
    no_args_is_help=True,
)


def register(root: typer.Typer) -> None:
    root.add_typer(app)


def _require_schema(engine: Engine) -> None:
    from oasst.backend.migrate import current_revision

    if current_revision(engine) is None:
        engine.dispose()
        fail("The database has no oasst schema yet.", "Create it first with: oasst db upgrade")


@app.command("create")
def create_command(
    description: Annotated[str, typer.Option(help="Who uses this key, e.g. 'discord bot'.")],
    trusted: Annotated[
        bool, typer.Option("--trusted", help="Trusted keys may act on every user and message (the website).")
    ] = False,
    frontend_type: Annotated[str | None, typer.Option(help="Free-form kind: web, discord, script...")] = None,
    admin_email: Annotated[str | None, typer.Option(help="Who to contact about this client.")] = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Create an API client and print its key. The key is shown only once; only its hash is stored."""
    from oasst.backend.db import Database
    from oasst.backend.services.clients import create_api_client

    settings = load_backend_settings(database_url=database_url)
    engine = open_engine(settings, must_exist=True)
    _require_schema(engine)
    database = Database(engine)
    try:
        client, key = database.write(
            lambda s: create_api_client(
                s,
                description=description,
                trusted=trusted,
                frontend_type=frontend_type,
                admin_email=admin_email,
            )
        )
    finally:
        database.dispose()
    kind = "trusted" if trusted else "untrusted"
    console(stderr=True).print(f"Created {kind} API client {client.id} ({description}). Its key, shown once:")
    console().print(key, soft_wrap=True)
    console(stderr=True).print('Send it as the "X-API-Key" header.')


@app.command("list")
def list_command(database_url: DatabaseUrlOption = None) -> None:
    """List the API clients (keys themselves are never stored, so they cannot be shown)."""
    from rich.table import Table
    from sqlalchemy import select

    from oasst.backend.db import Database
    from oasst.backend.models import ApiClient

    settings = load_backend_settings(database_url=database_url)
    engine = open_engine(settings, must_exist=True)
    _require_schema(engine)
    database = Database(engine)
    try:
        clients = database.read(lambda s: list(s.scalars(select(ApiClient).order_by(ApiClient.created_date))))
    finally:
        database.dispose()
    if not clients:
        console().print("No API clients yet. Create one with: oasst keys create --description ...")
        return
    table = Table("id", "description", "kind", "created")
    table.columns[0].no_wrap = True
    for c in clients:
        kind = ["trusted" if c.trusted else "untrusted"]
        if not c.enabled:
            kind.append("disabled")
        if c.frontend_type:
            kind.append(c.frontend_type)
        created = c.created_date.strftime("%Y-%m-%d") if c.created_date else ""
        table.add_row(str(c.id), c.description, ", ".join(kind), created)
    console().print(table)
