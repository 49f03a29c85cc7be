"""``oasst up``: the embedded default — everything on one machine, in one process, no services to install.

It runs the backend and the website on SQLite files in the data directory. The run is built from *parts*:
each part prepares what it needs in the data directory, contributes an ASGI app that answers some path
prefixes (or every other path), and adds lines to the start-up panel. The inference server joins as a
further part in :func:`build_parts`.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from oasst.cli import console, fail, load_backend_settings, open_engine, redact_url

if TYPE_CHECKING:
    from rich.console import RenderableType

    from oasst.backend.settings import Settings

API_KEY_FILE = "api_key"
ROOT_TOKEN_FILE = "root_token"
DATABASE_FILE = "oasst.db"
WEB_DATABASE_FILE = "web.db"
WEB_SECRET_FILE = "web_secret"
BACKEND_PREFIXES = ("/api/", "/docs", "/health", "/openapi.json")


def register(root: typer.Typer) -> None:
    root.command("up")(up_command)


def default_data_dir() -> Path:
    """``./.oasst`` when the current folder has one, else ``~/.oasst``."""
    local = Path.cwd() / ".oasst"
    return local if local.is_dir() else Path.home() / ".oasst"


def read_or_create_secret(path: Path) -> str:
    """The secret stored in ``path`` (mode 0600), made on first use."""
    if path.exists():
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        value = path.read_text().strip()
        if value:
            return value
        path.unlink()
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


@dataclass
class UpContext:
    """What every part of ``oasst up`` shares."""

    data_dir: Path
    host: str
    port: int
    database_url: str | None = None
    dev_login: bool = False
    admin_emails: list[str] = field(default_factory=list)
    backend_app: Any = None  # set by the backend part; the website reaches it in process
    api_key: str = ""

    @property
    def url(self) -> str:
        shown = "127.0.0.1" if self.host in {"0.0.0.0", "::", ""} else self.host
        return f"http://{shown}:{self.port}"


@dataclass
class Part:
    """One service of the embedded run: an ASGI app answering ``prefixes`` (none = every other path)."""

    name: str
    app: Any
    prefixes: tuple[str, ...] = ()
    rows: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def backend_settings(ctx: UpContext, root_token: str) -> Settings:
    """Backend settings: the environment as usual, with the data directory's database and root token."""
    database_url = ctx.database_url or f"sqlite:///{ctx.data_dir / DATABASE_FILE}"
    from_env = load_backend_settings(database_url=database_url)
    tokens = [t.get_secret_value() for t in from_env.root_tokens]
    return load_backend_settings(database_url=database_url, root_tokens=[*tokens, root_token])


def prepare_backend(ctx: UpContext) -> Part:
    """Migrate the database, make sure the local website's trusted key exists, build the backend app."""
    from oasst.backend.app import create_app
    from oasst.backend.db import Database
    from oasst.backend.migrate import upgrade
    from oasst.backend.services.clients import ensure_api_client

    root_token = read_or_create_secret(ctx.data_dir / ROOT_TOKEN_FILE)
    api_key = read_or_create_secret(ctx.data_dir / API_KEY_FILE)
    settings = backend_settings(ctx, root_token)
    engine = open_engine(settings)
    with console().status("Preparing the database ..."):
        upgrade(engine)
        database = Database(engine, max_retries=settings.db_max_tx_retries)
        database.write(
            lambda s: ensure_api_client(
                s, api_key=api_key, description="local website (oasst up)", trusted=True
            )
        )
    app = create_app(settings, database=database, migrate=False)
    ctx.backend_app = app
    ctx.api_key = api_key
    curl = f'curl -H "X-API-Key: {api_key}" {ctx.url}/api/v1/stats/tree_manager/state_counts'
    return Part(
        name="backend",
        app=app,
        prefixes=BACKEND_PREFIXES,
        rows=[
            ("Backend API", f"{ctx.url}/api/v1"),
            ("API docs", f"{ctx.url}/docs"),
            ("API key", f"{api_key}  (trusted, saved in {ctx.data_dir / API_KEY_FILE})"),
            ("Root token", f"saved in {ctx.data_dir / ROOT_TOKEN_FILE}"),
            ("Database", redact_url(settings.database_url)),
        ],
        notes=[
            'Use the key in the "X-API-Key" header, e.g.:',
            curl,
            "Simulate volunteers:",
            f"oasst simulate --url {ctx.url} --api-key {api_key} --users 3 --until-ready 1",
        ],
    )


def prepare_web(ctx: UpContext) -> Part:
    """The website, reaching the in-process backend through an ASGI transport with the trusted key."""
    import httpx

    from oasst.web.app import create_app
    from oasst.web.settings import WebSettings

    secret = read_or_create_secret(ctx.data_dir / WEB_SECRET_FILE)
    database_url = ctx.database_url or f"sqlite:///{ctx.data_dir / WEB_DATABASE_FILE}"
    try:
        settings = WebSettings(
            environment="development" if ctx.dev_login else "production",
            base_url=ctx.url,
            secret_key=secret,
            database_url=database_url,
            backend_url="http://backend.internal",
            backend_api_key=ctx.api_key,
            dev_login=ctx.dev_login,
            admin_emails=ctx.admin_emails,
        )
    except ValueError as exc:
        fail(f"Invalid website settings: {exc}", "Check the OASST_WEB_* environment variables.")
    with console().status("Preparing the website ..."):
        app = create_app(settings, backend_transport=httpx.ASGITransport(app=ctx.backend_app))
        app.state.accounts.migrate()
    mail = "SMTP " + settings.smtp.host if settings.smtp.host else "links printed here (no SMTP configured)"
    rows = [("Website", ctx.url), ("Sign-in mail", mail)]
    if ctx.dev_login:
        rows.append(("Dev login", "on: anyone can sign in with any role (never use in production)"))
    return Part(name="web", app=app, rows=rows)


def build_parts(ctx: UpContext) -> list[Part]:
    """Every part of the embedded run; the part without prefixes answers every other path."""
    return [prepare_backend(ctx), prepare_web(ctx)]


def compose(parts: list[Part]) -> Any:
    """One ASGI app: each request goes to the first part whose prefix matches, else to the catch-all part."""
    if len(parts) == 1:
        return parts[0].app
    from contextlib import AsyncExitStack, asynccontextmanager

    fallback = next((p.app for p in parts if not p.prefixes), parts[-1].app)
    routed = [(prefix, p.app) for p in parts for prefix in p.prefixes]

    @asynccontextmanager
    async def lifespan() -> Any:
        async with AsyncExitStack() as stack:
            for part in parts:
                router = getattr(part.app, "router", None)
                context = getattr(router, "lifespan_context", None)
                if context is not None:
                    await stack.enter_async_context(context(part.app))
            yield

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _run_lifespan(lifespan, receive, send)
            return
        path = scope.get("path", "")
        for prefix, target in routed:
            if path.startswith(prefix) or path == prefix.rstrip("/"):
                await target(scope, receive, send)
                return
        await fallback(scope, receive, send)

    return app


async def _run_lifespan(lifespan: Any, receive: Any, send: Any) -> None:
    """Start every part's lifespan together, and stop them together."""
    message = await receive()
    assert message["type"] == "lifespan.startup"
    try:
        async with lifespan():
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown"
    except BaseException as exc:
        await send({"type": "lifespan.startup.failed", "message": str(exc)})
        raise
    await send({"type": "lifespan.shutdown.complete"})


def panel(ctx: UpContext, parts: list[Part]) -> RenderableType:
    from rich.panel import Panel
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for part in parts:
        for label, value in part.rows:
            table.add_row(label, value)
    return Panel(table, title=f"oasst is running on {ctx.url}", subtitle="Ctrl+C stops it", expand=False)


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            fail(
                f"Cannot listen on {host}:{port}: {exc.strerror or exc}.",
                "Another program uses that port: pick another with --port.",
            )


def up_command(
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 for every one).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="OASST_DATA_DIR",
            help="Where the database, API key and root token live. Default: ./.oasst if it exists, "
            "else ~/.oasst.",
            show_default=False,
            file_okay=False,
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            envvar="OASST_DATABASE_URL",
            help="Use this database instead of the SQLite file in the data directory.",
            show_default=False,
        ),
    ] = None,
    dev_login: Annotated[
        bool,
        typer.Option(help="Offer the website's development login (any name, any role). Never in production."),
    ] = False,
    admin_email: Annotated[
        list[str] | None,
        typer.Option(
            envvar="OASST_WEB_ADMIN_EMAILS",
            help="E-mail address that becomes a website admin on first sign-in (repeatable).",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run oasst on this machine, in one process, with nothing else to install.

    Serves the backend API under /api/v1 and the website at the root. The databases are SQLite files in the
    data directory, migrated on start; sign-in links are printed here unless SMTP is configured. A trusted API key (for the local
    website and your scripts) and a root token are made on the first run, saved in the data directory and
    reused later. Prints the URLs and the key, then serves until Ctrl+C.
    """
    import uvicorn

    ctx = UpContext(
        data_dir=(data_dir or default_data_dir()).expanduser().resolve(),
        host=host,
        port=port,
        database_url=database_url,
        dev_login=dev_login,
        admin_emails=[e for value in admin_email or [] for e in value.split(",") if e.strip()],
    )
    try:
        ctx.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"Cannot create the data directory {ctx.data_dir}: {exc}", "Choose another with --data-dir.")
    check_port_free(host, port)
    parts = build_parts(ctx)
    app = compose(parts)

    out = console()
    out.print(panel(ctx, parts))
    for part in parts:
        for note in part.notes:
            out.print(note, soft_wrap=True, markup=False)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level))
    interrupted = False
    try:
        server.run()
    except KeyboardInterrupt:
        interrupted = True
    if not server.started and not interrupted:
        fail("The server did not start; see the log above.")
    out.print("oasst stopped.")
