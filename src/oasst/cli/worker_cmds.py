"""``oasst worker run``: serve a model to an inference server (a local transformers model or an
OpenAI-compatible upstream such as vLLM, TGI or llama.cpp server)."""

from __future__ import annotations

from typing import Annotated

import typer

from oasst.cli import console, fail

app = typer.Typer(
    name="worker",
    help="Run an inference worker that serves a model to an oasst inference server.",
    no_args_is_help=True,
)


def register(root: typer.Typer) -> None:
    root.add_typer(app)


@app.command("run")
def run_command(
    server: Annotated[
        str, typer.Option(envvar="OASST_WORKER_SERVER", help="The inference server's base URL (http or ws).")
    ] = "http://127.0.0.1:8090",
    key: Annotated[
        str,
        typer.Option(
            envvar="OASST_WORKER_KEY", help="This worker's key (`oasst inference keys create --kind worker`)."
        ),
    ] = "",
    model: Annotated[
        str | None,
        typer.Option(
            envvar="OASST_WORKER_MODEL",
            help="A model directory (what `oasst train` writes) or Hugging Face hub id to run here.",
            show_default=False,
        ),
    ] = None,
    upstream: Annotated[
        str | None,
        typer.Option(
            envvar="OASST_WORKER_UPSTREAM",
            help="Instead of --model: an OpenAI-compatible server to relay to (vLLM, TGI, llama.cpp).",
            show_default=False,
        ),
    ] = None,
    upstream_key: Annotated[
        str | None,
        typer.Option(
            envvar="OASST_WORKER_UPSTREAM_KEY", help="API key for the upstream.", show_default=False
        ),
    ] = None,
    upstream_model: Annotated[
        str | None,
        typer.Option(help="The upstream's model name. Default: the first it lists.", show_default=False),
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="With --upstream: a tokenizer (directory or hub id) to cut long chats to --context-length.",
            show_default=False,
        ),
    ] = None,
    model_name: Annotated[
        str | None,
        typer.Option(
            envvar="OASST_WORKER_MODEL_NAME",
            help="The model name clients ask for. Default: the model directory's name or the upstream model.",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str, typer.Option(envvar="OASST_WORKER_NAME", help="This worker's name in the server's logs.")
    ] = "",
    max_parallel: Annotated[
        int,
        typer.Option(
            min=1,
            max=1024,
            envvar="OASST_WORKER_MAX_PARALLEL",
            help="Requests run at once (the transformers engine decodes them together, one batch per step).",
        ),
    ] = 4,
    context_length: Annotated[
        int | None,
        typer.Option(
            min=16, help="Tokens of context. Default: the model's (2048 for an upstream).", show_default=False
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto (GPU if there is one), cpu, cuda, cuda:1, ...")] = "auto",
    threads: Annotated[
        int | None,
        typer.Option(
            min=1, help="CPU threads for torch. Default: OMP_NUM_THREADS, else 1.", show_default=False
        ),
    ] = None,
    heartbeat: Annotated[float, typer.Option(min=0.1, help="Seconds between pings to the server.")] = 10.0,
) -> None:
    """Connect to the inference server and serve a model until Ctrl+C (or SIGTERM).

    Give either `--model` (runs the model in this process with transformers, on the GPU in bf16 when there
    is one) or `--upstream` (relays to an OpenAI-compatible server). The worker reconnects by itself when
    the server goes away; a rejected key or protocol version ends it with the server's reason.
    """
    if (model is None) == (upstream is None):
        fail("Say what to serve.", "Give either --model DIR (or hub id) or --upstream URL, not both.")
    if not key:
        fail(
            "The worker needs its key.",
            "Pass --key or set OASST_WORKER_KEY; create one with: oasst inference keys create --kind worker --name NAME",
        )
    import asyncio
    import logging

    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console(True))]
    )
    from oasst.inference.worker.engines import EngineError, make_engine
    from oasst.inference.worker.runner import WorkerRefused, WorkerSettings, worker_url

    try:
        worker_url(server)
    except ValueError:
        fail(f"Not a server URL: {server!r}", "Use http://host:port (or ws://host:port).")
    try:
        engine = make_engine(
            model=model,
            upstream=upstream,
            upstream_key=upstream_key,
            upstream_model=upstream_model,
            name=model_name,
            max_parallel=max_parallel,
            context_length=context_length,
            device=device,
            threads=threads,
            tokenizer=tokenizer,
        )
    except EngineError as exc:
        fail(str(exc), "Check --model: a directory with config.json and a tokenizer, or a hub id.")
    settings = WorkerSettings(server_url=server, api_key=key, name=name, heartbeat_s=heartbeat)
    try:
        asyncio.run(_serve(engine, settings))
    except EngineError as exc:
        fail(str(exc), "Check --upstream, --upstream-key and --upstream-model.")
    except WorkerRefused as exc:
        fail(
            f"The server refused this worker: {exc}",
            "Check --key (a worker key) and that worker and server versions match.",
        )


async def _serve(engine: object, settings: object) -> None:
    import asyncio
    import contextlib
    import signal

    from oasst.inference.worker.engines import Engine
    from oasst.inference.worker.runner import WorkerRunner, WorkerSettings

    assert isinstance(engine, Engine) and isinstance(settings, WorkerSettings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    out = console(True)
    await engine.start()
    out.print(
        f"Serving [bold]{engine.model_name}[/] ({engine.kind}, {engine.max_parallel} at once, "
        f"context {engine.context_length}) to {settings.server_url}"
    )
    try:
        await WorkerRunner(engine, settings).run(stop)
    finally:
        await engine.aclose()
        out.print("Worker stopped.")
