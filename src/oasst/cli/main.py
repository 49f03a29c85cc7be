"""The ``oasst`` command: the Typer app, its command modules, and ``main()`` (the console script)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from oasst import __version__
from oasst.cli import (
    backend_cmds,
    console,
    data_cmds,
    dataset_cmds,
    db_cmds,
    eval_cmds,
    fail,
    inference_cmds,
    keys_cmds,
    train_cmds,
    up,
    web_cmds,
    worker_cmds,
)

if TYPE_CHECKING:
    from oasst.cli.simulate import SimulationReport

app = typer.Typer(
    name="oasst",
    help="oasst: a complete, self-hostable Open Assistant. Start with `oasst up`.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,  # locals may hold keys and tokens
)

# Each command module adds its commands or group to the root app; a new module is one more line here.
REGISTRARS: list[Callable[[typer.Typer], None]] = [
    data_cmds.register,
    dataset_cmds.register,
    up.register,
    backend_cmds.register,
    db_cmds.register,
    keys_cmds.register,
    web_cmds.register,
    train_cmds.register,
    worker_cmds.register,
    inference_cmds.register,
    eval_cmds.register,
]
for _register in REGISTRARS:
    _register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"oasst {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """oasst: a complete, self-hostable Open Assistant. Start with `oasst up`."""


@app.command("simulate")
def simulate_command(
    api_key: Annotated[
        str, typer.Option(envvar="OASST_API_KEY", help="API key (trusted, to count ready trees).")
    ],
    url: Annotated[str, typer.Option(envvar="OASST_URL", help="The backend's base URL.")] = (
        "http://127.0.0.1:8080"
    ),
    users: Annotated[int, typer.Option(min=1, help="Simulated volunteers working at once.")] = 3,
    until_ready: Annotated[
        int | None,
        typer.Option(min=1, help="Stop once this many new trees reach ready_for_export.", show_default=False),
    ] = None,
    duration: Annotated[
        float | None, typer.Option(min=0.1, help="Stop after this many seconds.", show_default=False)
    ] = None,
    lang: Annotated[str, typer.Option(help="Language of the tasks and texts.")] = "en",
    seed: Annotated[
        int | None, typer.Option(help="Seed for the volunteers' choices.", show_default=False)
    ] = None,
) -> None:
    """Simulated volunteers do random tasks through the HTTP API.

    Each volunteer is its own user doing random tasks (write, label, rank) until enough trees are ready for
    export or time is up; then a summary of what they did is printed. Ctrl+C stops early and still prints
    the summary.
    """
    if until_ready is None and duration is None:
        fail("Say when to stop.", "Add --until-ready K (trees ready for export) and/or --duration SECONDS.")
    import asyncio

    from oasst.cli.simulate import SimulationError

    try:
        report = asyncio.run(
            _simulate_with_progress(
                url=url,
                api_key=api_key,
                users=users,
                until_ready=until_ready,
                duration=duration,
                lang=lang,
                seed=seed,
            )
        )
    except SimulationError as exc:
        fail(str(exc))
    print_report(report)
    if until_ready is not None and (report.trees_ready or 0) < until_ready:
        fail(f"Only {report.trees_ready or 0} of {until_ready} trees became ready for export.")


async def _simulate_with_progress(
    *,
    url: str,
    api_key: str,
    users: int,
    until_ready: int | None,
    duration: float | None,
    lang: str,
    seed: int | None,
) -> SimulationReport:
    import asyncio
    import contextlib
    import signal

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from oasst.cli.simulate import SimulationProgress, run_simulation
    from oasst.client import BackendClient

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Ctrl+C ends the run gracefully (with a summary); where unsupported it just interrupts.
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, stop.set)
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console(stderr=True), transient=False) as progress:
        trees = progress.add_task("trees ready", total=until_ready, info="", visible=until_ready is not None)
        clock = progress.add_task(
            "seconds", total=duration, info="", visible=duration is not None and until_ready is None
        )

        def on_progress(p: SimulationProgress) -> None:
            info = f"{p.tasks_done} tasks done, {p.errors} errors"
            progress.update(trees, completed=p.trees_ready or 0, info=info)
            progress.update(clock, completed=min(p.elapsed_s, duration or 0), info=info)

        try:
            return await run_simulation(
                lambda: BackendClient(url, api_key),
                users,
                until_ready=until_ready,
                duration=duration,
                lang=lang,
                seed=seed,
                on_progress=on_progress,
                stop=stop,
            )
        finally:
            loop.remove_signal_handler(signal.SIGINT)


def print_report(report: SimulationReport) -> None:
    """The end-of-run summary: tasks by type, errors by code, throughput and latencies."""
    from rich.table import Table

    out = console()
    tasks = Table("task type", "done", title="Tasks")
    for kind, count in report.tasks_by_type.most_common():
        tasks.add_row(kind, str(count))
    tasks.add_row("[bold]all[/]", f"[bold]{report.cycles}[/]")
    out.print(tasks)
    if report.errors_by_code:
        errors = Table("error code", "count", "example", title="Errors")
        for code, count in report.errors_by_code.most_common():
            errors.add_row(str(code), str(count), report.error_examples.get(code, ""))
        out.print(errors)
    latency = Table("call", "n", "p50 ms", "p95 ms", "p99 ms", title="Latency")
    for call, values in report.latencies_s.items():
        q = report.latency_ms(call)
        latency.add_row(call, str(len(values)), *(f"{q[p]:.0f}" if q else "-" for p in (50, 95, 99)))
    out.print(latency)
    ready = "unknown" if report.trees_ready is None else str(report.trees_ready)
    out.print(
        f"{report.users} volunteers, {report.elapsed_s:.1f} s: {report.cycles} cycles "
        f"({report.cycles_per_s:.1f}/s), {report.nacks} nacks, {ready} new trees ready for export."
    )
    for note in report.notes:
        out.print(f"[yellow]Note:[/] {note}")


def main() -> None:
    """Entry point of the ``oasst`` console script."""
    app()


if __name__ == "__main__":
    main()
