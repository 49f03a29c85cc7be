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
INFERENCE_DATABASE_FILE = "inference.db"
INFERENCE_SECRET_FILE = "inference_user_secret"
WORKER_KEY_FILE = "worker_key"
DEFAULT_MODEL_DIR = "models/tiny"
DEFAULT_MODEL_NAME = "oasst-tiny"
BACKEND_PREFIXES = ("/api/", "/docs", "/health", "/openapi.json")
INFERENCE_PREFIX = "/inference"


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
    model: str | None = None  # a model directory (or hub id) for chat; None = the tiny default model
    backend_app: Any = None  # set by the backend part; the website reaches it in process
    api_key: str = ""
    root_token: str = ""
    inference_app: Any = None  # set by the inference part
    inference_secret: str = ""
    model_name: str = ""

    @property
    def url(self) -> str:
        shown = "127.0.0.1" if self.host in {"0.0.0.0", "::", ""} else self.host
        return f"http://{shown}:{self.port}"


@dataclass
class Part:
    """One service of the embedded run: an ASGI app answering ``prefixes`` (none = every other path).

    With ``mount`` the part lives under that path and sees paths without it (``/inference/v1/models`` →
    ``/v1/models``), as behind a reverse proxy. ``background`` coroutines (e.g. the local worker) run
    while the server runs.
    """

    name: str
    app: Any
    prefixes: tuple[str, ...] = ()
    mount: str = ""
    background: list[Any] = field(default_factory=list)
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
    ctx.root_token = root_token
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
    """The website, reaching the in-process backend (trusted key) and chat server through ASGI transports."""
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
            inference_url="http://inference.internal" if ctx.inference_app is not None else None,
            inference_user_token_secret=ctx.inference_secret,
        )
    except ValueError as exc:
        fail(f"Invalid website settings: {exc}", "Check the OASST_WEB_* environment variables.")
    from oasst.client import StreamingASGITransport

    inference = StreamingASGITransport(ctx.inference_app) if ctx.inference_app is not None else None
    with console().status("Preparing the website ..."):
        # the inference app streams replies: httpx's own ASGI transport would hold a stream until its end
        app = create_app(
            settings,
            backend_transport=httpx.ASGITransport(app=ctx.backend_app),
            inference_transport=inference,
        )
        app.state.accounts.migrate()
    mail = "SMTP " + settings.smtp.host if settings.smtp.host else "links printed here (no SMTP configured)"
    rows = [("Website", ctx.url), ("Sign-in mail", mail)]
    if ctx.dev_login:
        rows.append(("Dev login", "on: anyone can sign in with any role (never use in production)"))
    return Part(name="web", app=app, rows=rows)


def prepare_inference(ctx: UpContext) -> Part:
    """The chat server under /inference, and one worker in this process serving the local model."""
    from oasst.inference.server.app import create_app
    from oasst.inference.server.db import Database, make_engine
    from oasst.inference.server.migrate import upgrade
    from oasst.inference.server.settings import Settings

    ctx.inference_secret = read_or_create_secret(ctx.data_dir / INFERENCE_SECRET_FILE)
    model_dir, model_note = local_model(ctx)
    ctx.model_name = DEFAULT_MODEL_NAME if ctx.model is None else Path(ctx.model).name or ctx.model
    try:
        settings = Settings(
            database_url=_sibling_url(ctx, INFERENCE_DATABASE_FILE),
            user_token_secret=ctx.inference_secret,
            root_tokens=[ctx.root_token],
            default_model=ctx.model_name,
        )
    except ValueError as exc:
        fail(f"Invalid inference settings: {exc}", "Check the OASST_INFERENCE_* environment variables.")
    with console().status("Preparing the chat server ..."):
        database = Database(make_engine(settings))
        upgrade(database.engine)
        worker_key = ensure_worker_key(ctx, database)
    app = create_app(settings, database=database, migrate=False)
    ctx.inference_app = app
    rows = [("Chat API", f"{ctx.url}{INFERENCE_PREFIX}  (OpenAI-compatible: {ctx.url}{INFERENCE_PREFIX}/v1)")]
    background: list[Any] = []
    if model_dir is not None:
        rows.append(("Chat model", f"{ctx.model_name}: {model_dir}"))
        background.append(lambda: serve_local_model(ctx, model_dir, worker_key))
    else:
        rows.append(("Chat model", model_note))
    return Part(name="inference", app=app, mount=INFERENCE_PREFIX, rows=rows, background=background)


def _sibling_url(ctx: UpContext, file_name: str) -> str:
    """The part's own SQLite file, or the shared database when --database-url points elsewhere."""
    return ctx.database_url or f"sqlite:///{ctx.data_dir / file_name}"


def ensure_worker_key(ctx: UpContext, database: Any) -> str:
    """The local worker's key: stored in the data directory, created (hashed in the database) when new."""
    from oasst.inference.server.errors import InferenceError
    from oasst.inference.server.services.keys import create_key, verify_key

    path = ctx.data_dir / WORKER_KEY_FILE
    if path.exists():
        key = path.read_text().strip()
        try:
            database.read(lambda s: verify_key(s, key, kind="worker"))
            return key
        except InferenceError:
            path.unlink()
    _, key = database.write(lambda s: create_key(s, kind="worker", name="local worker (oasst up)"))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return str(key)


def local_model(ctx: UpContext) -> tuple[str | None, str]:
    """``(model directory, note)``: the configured model, else the tiny default (built on first run).

    Without torch there is no local model: chat then waits for an outside worker (`oasst worker run`).
    """
    import importlib.util

    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        return (
            None,
            "none: install the local model with pip install 'oasst[train]', or connect `oasst worker run`",
        )
    if ctx.model is not None:
        return ctx.model, ""
    target = ctx.data_dir / DEFAULT_MODEL_DIR
    if not (target / "config.json").is_file():
        from oasst.training.bootstrap import BootstrapConfig, bootstrap

        with console().status("Building the tiny default model (first run only) ..."):
            bootstrap(
                default_corpus(), BootstrapConfig(output_dir=str(target), vocab_size=2048, pretrain_steps=0)
            )
    return str(target), ""


def default_corpus() -> list[str]:
    """Texts for the tiny model's tokenizer: the website's guidelines (every language shipped)."""
    from importlib.resources import files

    texts: list[str] = []
    for entry in files("oasst.web").joinpath("guidelines").iterdir():
        if entry.name.endswith(".md"):
            texts.extend(line for line in entry.read_text(encoding="utf-8").splitlines() if line.strip())
    return texts


async def serve_local_model(ctx: UpContext, model_dir: str, worker_key: str) -> None:
    """Run one worker in this process, connected to this server's worker gateway."""
    import asyncio

    from oasst.inference.worker.engines import make_engine
    from oasst.inference.worker.runner import WorkerSettings, run_worker

    engine = await asyncio.to_thread(make_engine, model=model_dir, name=ctx.model_name, max_parallel=4)
    settings = WorkerSettings(
        server_url=f"{ctx.url}{INFERENCE_PREFIX}/workers/ws", api_key=worker_key, name="local"
    )
    await run_worker(engine, settings)


def build_parts(ctx: UpContext) -> list[Part]:
    """Every part of the embedded run; the part without prefixes answers every other path."""
    return [prepare_backend(ctx), prepare_inference(ctx), prepare_web(ctx)]


class Background:
    """The parts' background jobs (the local worker): started with the server's lifespan, and stopped
    either at its end or — by ``oasst up`` — before the server closes its connections, so the local worker
    leaves cleanly instead of finding the server gone and trying to reconnect."""

    def __init__(self, parts: list[Part]) -> None:
        self.jobs = [job for part in parts for job in part.background]
        self.tasks: list[Any] = []

    def start(self) -> None:
        import asyncio

        self.tasks = [asyncio.create_task(job()) for job in self.jobs]

    async def stop(self) -> None:
        import asyncio

        tasks, self.tasks = self.tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def compose(parts: list[Part], background: Background) -> Any:
    """One ASGI app: each request goes to the first part whose prefix matches, else to the catch-all part."""
    if len(parts) == 1:
        return parts[0].app
    from contextlib import AsyncExitStack, asynccontextmanager

    fallback = next((p.app for p in parts if not p.prefixes and not p.mount), parts[-1].app)
    routed = [(prefix, p.app) for p in parts for prefix in p.prefixes]
    mounted = [(p.mount, p.app) for p in parts if p.mount]

    @asynccontextmanager
    async def lifespan() -> Any:
        async with AsyncExitStack() as stack:
            for part in parts:
                router = getattr(part.app, "router", None)
                context = getattr(router, "lifespan_context", None)
                if context is not None:
                    await stack.enter_async_context(context(part.app))
            background.start()
            try:
                yield
            finally:
                await background.stop()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _run_lifespan(lifespan, receive, send)
            return
        path = scope.get("path", "")
        for mount, target in mounted:
            if path == mount or path.startswith(mount + "/"):
                inner = dict(
                    scope, path=path[len(mount) :] or "/", root_path=scope.get("root_path", "") + mount
                )
                await target(inner, receive, send)
                return
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
    model: Annotated[
        str | None,
        typer.Option(
            envvar="OASST_MODEL",
            help="Model directory (e.g. what `oasst train sft` wrote) or hub id for chat. "
            "Default: a tiny model built on the first run.",
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
        model=model,
    )
    try:
        ctx.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"Cannot create the data directory {ctx.data_dir}: {exc}", "Choose another with --data-dir.")
    check_port_free(host, port)
    parts = build_parts(ctx)
    background = Background(parts)
    app = compose(parts, background)

    out = console()
    out.print(panel(ctx, parts))
    for part in parts:
        for note in part.notes:
            out.print(note, soft_wrap=True, markup=False)

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            await background.stop()  # the local worker leaves before the connections close
            await super().shutdown(sockets)

    server = Server(uvicorn.Config(app, host=host, port=port, log_level=log_level))
    interrupted = False
    try:
        server.run()
    except KeyboardInterrupt:
        interrupted = True
    if not server.started and not interrupted:
        fail("The server did not start; see the log above.")
    out.print("oasst stopped.")
