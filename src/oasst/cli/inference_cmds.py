"""``oasst inference``: serve the inference server, and manage its worker and API keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from oasst.cli import console, fail, redact_url

if TYPE_CHECKING:
    from fastapi import FastAPI
    from sqlalchemy import Engine

    from oasst.inference.server.settings import Settings

app = typer.Typer(
    name="inference",
    help="The chat service: serve it (OASST_INFERENCE_* settings) and create worker/API keys.",
    no_args_is_help=True,
)
keys_app = typer.Typer(name="keys", help="Worker keys and OpenAI-API keys of the inference server.")
app.add_typer(keys_app)

FACTORY = "oasst.cli.inference_cmds:app_factory"

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="OASST_INFERENCE_DATABASE_URL",
        help="The inference database (default: sqlite:///oasst-inference.db).",
        show_default=False,
    ),
]


def register(root: typer.Typer) -> None:
    from oasst.cli.inference_loop_cmds import register_loop  # export / synthesize (closing the loop)

    register_loop(app)
    root.add_typer(app)


def app_factory() -> FastAPI:
    """What each uvicorn worker process imports (settings from the environment)."""
    from oasst.inference.server.app import create_app

    return create_app(load_settings())


def load_settings(**overrides: object) -> Settings:
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from oasst.inference.server.settings import load_settings as load

    try:
        return load(**{k: v for k, v in overrides.items() if v is not None})
    except (SettingsError, ValidationError) as exc:
        fail(f"Invalid inference settings: {exc}", "Check the OASST_INFERENCE_* environment variables.")


def _migrated_engine(settings: Settings) -> Engine:
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from oasst.inference.server.db import make_engine
    from oasst.inference.server.migrate import upgrade

    if settings.database_url.startswith("sqlite:///"):
        from pathlib import Path

        Path(settings.database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings)
    try:
        upgrade(engine)
    except (CommandError, SQLAlchemyError) as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        fail(f"Could not migrate {redact_url(settings.database_url)}: {reason}")
    return engine


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option(envvar="OASST_INFERENCE_HOST", help="Interface.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="OASST_INFERENCE_PORT", help="Port.")] = 8090,
    workers: Annotated[
        int, typer.Option(min=1, help="Server processes (more than 1 needs OASST_INFERENCE_REDIS_URL).")
    ] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the chat API, /v1 and the worker websocket with uvicorn; migrates the database first."""
    import uvicorn

    settings = load_settings()
    if workers > 1 and not settings.redis_url:
        fail(
            "Several processes need shared state.",
            "Set OASST_INFERENCE_REDIS_URL, or run one process (the in-process queue is per process).",
        )
    if settings.redis_url:
        import redis

        try:
            redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3).ping()
        except redis.RedisError as exc:
            fail(f"Could not reach Redis at {redact_url(settings.redis_url)}: {exc}")
    _migrated_engine(settings).dispose()
    mode = "Redis" if settings.redis_url else "in-process (one process)"
    console(stderr=True).print(
        f"Serving oasst inference on http://{host}:{port}: database {redact_url(settings.database_url)}, "
        f"queue {mode}. Workers connect to ws://{host}:{port}/workers/ws."
    )
    try:
        if workers == 1:
            uvicorn.run(app_factory(), host=host, port=port, log_level=log_level)
        else:
            uvicorn.run(FACTORY, factory=True, host=host, port=port, workers=workers, log_level=log_level)
    except KeyboardInterrupt:
        pass


@keys_app.command("create")
def create_key_command(
    kind: Annotated[str, typer.Option(help="worker (workers connect with it) or api (/v1 clients).")],
    name: Annotated[str, typer.Option(help="Who uses it, e.g. 'gpu-box-1' or 'eval script'.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    if kind not in {"worker", "api"}:
        fail(f"Unknown kind {kind!r}.", "Use --kind worker or --kind api.")
    from oasst.inference.server.db import Database
    from oasst.inference.server.services.keys import create_key

    settings = load_settings(database_url=database_url)
    database = Database(_migrated_engine(settings))
    try:
        row, key = database.write(lambda s: create_key(s, kind=kind, name=name))
    finally:
        database.dispose()
    console(stderr=True).print(f"Created {kind} key {row.id} ({name}). The key, shown once:")
    console().print(key, soft_wrap=True)
    console(stderr=True).print("Send it as Authorization: Bearer <key>.")


@keys_app.command("list")
def list_keys_command(database_url: DatabaseUrl = None) -> None:
    """List keys (the keys themselves are never stored)."""
    from rich.table import Table

    from oasst.inference.server.db import Database
    from oasst.inference.server.services.keys import list_keys

    settings = load_settings(database_url=database_url)
    database = Database(_migrated_engine(settings))
    try:
        rows = database.read(list_keys)
    finally:
        database.dispose()
    table = Table("id", "kind", "name", "enabled", "created")
    for r in rows:
        table.add_row(r.id, r.kind, r.name, "yes" if r.enabled else "no", f"{r.created_at:%Y-%m-%d %H:%M}")
    console().print(table)
