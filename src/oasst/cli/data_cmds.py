"""``oasst export`` and ``oasst import``: message trees in and out of the backend database as oasst JSONL.

The files are those of the public oasst1/oasst2 datasets (one tree per line, or one message per line),
plain or gzipped. Both commands stream: memory stays flat however large the database or the file.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from oasst.cli import console, fail, load_backend_settings, open_engine
from oasst.cli.db_cmds import DatabaseUrlOption

if TYPE_CHECKING:
    from rich.progress import Progress, Task
    from rich.text import Text

    from oasst.backend.db import Database
    from oasst.backend.services.export import ExportOptions, ExportSummary
    from oasst.backend.services.importer import ImportOptions, ImportSummary

STATES = (
    "initial_prompt_review, prompt_lottery_waiting, growing, ranking, ready_for_scoring, ready_for_export, "
    "scoring_failed, aborted_low_grade, halted_by_moderator, backlog_ranking"
)
DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S"]


class Deleted(StrEnum):
    exclude = "exclude"
    include = "include"
    only = "only"


class Spam(StrEnum):
    accepted = "accepted"
    include = "include"
    only = "only"


class Synthetic(StrEnum):
    exclude = "exclude"
    include = "include"
    only = "only"


def _opt(*names: str, help: str, **kwargs: object) -> typer.models.OptionInfo:
    return typer.Option(*names, help=help, show_default=False, **kwargs)  # type: ignore[arg-type]


# export
OutputOption = Annotated[
    str,
    _opt("--output", "-o", help="File: .jsonl, or .jsonl.gz to compress (see --gzip-level); - is stdout."),
]
GzipLevelOption = Annotated[
    int,
    typer.Option(
        "--gzip-level",
        min=1,
        max=9,
        help="Compression of .gz output, 1 (fastest) to 9 (smallest). Default 1, for speed: on 2 cores "
        "level 6 made a labelled export ~50% slower for a file ~25% smaller.",
    ),
]
StatesOption = Annotated[
    list[str] | None,
    _opt(
        "--state",
        help=f"Tree state (repeat for several, or 'all'): {STATES}. "
        "Default: ready_for_export; every state for flat selections (--user, --*-only).",
    ),
]
LangOption = Annotated[list[str] | None, _opt("--lang", help="Only trees in this language (repeatable).")]
DeletedOption = Annotated[Deleted, typer.Option(help="Deleted messages: leave out, include, or only them.")]
SpamOption = Annotated[Spam, typer.Option(help="Review result: accepted only, all, or only rejected (spam).")]
SyntheticOption = Annotated[
    Synthetic, typer.Option(help="Synthetic (model) messages: skip trees with any, include, or only them.")
]
UserOption = Annotated[
    str | None, _opt("--user", help="One user's messages (user_id as exports show it), flat.")
]
FromOption = Annotated[
    datetime | None,
    _opt("--from", formats=DATE_FORMATS, help="Created at or after (UTC unless a zone is given)."),
]
ToOption = Annotated[
    datetime | None, _opt("--to", formats=DATE_FORMATS, help="Created before (UTC by default).")
]
PromptsOnlyOption = Annotated[bool, typer.Option("--prompts-only", help="Only the initial prompts.")]
LimitOption = Annotated[
    int | None, _opt("--limit", min=1, help="At most this many trees (messages if flat).")
]
LabelsOption = Annotated[bool, typer.Option("--export-labels", help="Per-message label averages and counts.")]
EventsOption = Annotated[bool, typer.Option("--export-events", help="Emoji and ranking events per message.")]
SeedOption = Annotated[
    str | None,
    _opt("--anonymizer-seed", help="Replace message, user and tree ids by keyed hashes (keep it secret)."),
]
# import
FilesOption = Annotated[
    list[Path],
    typer.Argument(exists=True, dir_okay=False, readable=True, help="oasst JSONL files (.jsonl[.gz])."),
]
OriginOption = Annotated[
    str | None, _opt("--origin", help="Trees' origin. Default: the tree's own, else the file name.")
]
StateOption = Annotated[
    str | None,
    _opt(
        "--state",
        help="Put every tree in this state, e.g. backlog_ranking for model output people should rank.",
    ),
]
MarkSyntheticOption = Annotated[
    bool, typer.Option("--synthetic", help="Mark every assistant message synthetic (model output).")
]
ModelOption = Annotated[str | None, _opt("--model-name", help="Model name for the synthetic messages.")]
BatchOption = Annotated[int, typer.Option(min=1, help="Messages per transaction (whole trees).")]
ValidateOption = Annotated[
    bool, typer.Option("--validate/--no-validate", help="Read each file once before writing anything.")
]
GroupedOption = Annotated[
    bool,
    typer.Option(
        "--grouped/--ungrouped", help="Flat files: a tree's lines are consecutive (else all in memory)."
    ),
]


def register(root: typer.Typer) -> None:
    """Add ``export`` and ``import`` to the root ``oasst`` app."""
    root.command("export")(export_command)
    root.command("import")(import_command)


def export_command(
    output: OutputOption = "-",
    state: StatesOption = None,
    lang: LangOption = None,
    deleted: DeletedOption = Deleted.exclude,
    spam: SpamOption = Spam.accepted,
    synthetic: SyntheticOption = Synthetic.exclude,
    user: UserOption = None,
    from_date: FromOption = None,
    to_date: ToOption = None,
    prompts_only: PromptsOnlyOption = False,
    limit: LimitOption = None,
    export_labels: LabelsOption = False,
    export_events: EventsOption = False,
    anonymizer_seed: SeedOption = None,
    gzip_level: GzipLevelOption = 1,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Export message trees as oasst JSONL (the format of the public oasst1/oasst2 datasets).

    One tree per line; a user's messages (--user) and the deleted-, spam- or synthetic-only selections
    are incomplete trees and come as one message per line. Filters combine. `review_result` is written
    as stored, and unknown fields of imported data (e.g. detoxify, CRITERIA) come back out.
    """
    from oasst.backend.services.export import ExportOptions

    _check_states(state or [], allow_all=True)
    options = ExportOptions(
        states=tuple(state) if state else None,
        langs=tuple(lang or ()),
        deleted=deleted.value,
        spam=spam.value,
        synthetic=synthetic.value,
        from_date=_utc(from_date),
        to_date=_utc(to_date),
        prompts_only=prompts_only,
        limit=limit,
        labels=export_labels,
        events=export_events,
        anonymizer_seed=anonymizer_seed,
        gzip_level=gzip_level,
    )
    summary = _run_export(database_url, output, options, user)
    where = "stdout" if output == "-" else output
    what = f"{summary.trees:,} trees ({summary.messages:,} messages)"
    if options.flat or user is not None:
        what = f"{summary.messages:,} messages"
    console(stderr=True).print(
        f"[green]✓[/] Exported {what} to {where} in {summary.seconds:.1f} s "
        f"({summary.messages_per_s:,.0f} messages/s)."
    )


def _run_export(
    database_url: str | None, output: str, options: ExportOptions, user: str | None
) -> ExportSummary:
    import dataclasses

    from sqlalchemy.exc import SQLAlchemyError

    from oasst.backend.services.export import export_to, find_user_id
    from oasst.data import OasstDataError

    database = _open_database(database_url)
    try:
        if user is not None:
            if (user_id := find_user_id(database, user)) is None:
                fail(f"There is no user {user!r}.", "Give the user_id as an export shows it.")
            options = dataclasses.replace(options, user_id=user_id)
        with _progress() as progress:
            task = progress.add_task("exporting", total=None)

            def on_progress(done: ExportSummary) -> None:
                progress.update(task, completed=done.messages, description=f"{done.messages:,} messages")

            return export_to(database, output, options, on_progress=on_progress)
    except (OSError, OasstDataError) as exc:
        fail(f"Could not write {output}: {exc}")
    except SQLAlchemyError as exc:
        fail(f"The export failed: {_reason(exc)}", "Nothing was written; check the database and try again.")
    finally:
        database.dispose()


def import_command(
    files: FilesOption,
    origin: OriginOption = None,
    state: StateOption = None,
    synthetic: MarkSyntheticOption = False,
    model_name: ModelOption = None,
    batch_messages: BatchOption = 2000,
    validate: ValidateOption = True,
    grouped: GroupedOption = True,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Import oasst JSONL exports (trees or flat messages, plain or gzipped) into the backend database.

    Importing is idempotent: trees whose prompt is already in the database are skipped. Everything is owned
    by the "oasst import" API client, with one user per exported user_id. A bad line stops the import
    before anything is written (unless --no-validate), naming the file and line.
    """
    from oasst.backend.models import TreeState
    from oasst.backend.services.importer import ImportOptions

    _check_states([state] if state else [], allow_all=False)
    options = ImportOptions(
        origin=origin,
        state=TreeState(state) if state else None,
        synthetic=synthetic,
        model_name=model_name,
        batch_messages=batch_messages,
        validate=validate,
        grouped=grouped,
    )
    summary = _run_import(database_url, files, options)
    out = console(stderr=True)
    out.print(
        f"[green]✓[/] Imported {summary.trees:,} trees ({summary.messages:,} messages) from {summary.files} "
        f"file(s) in {summary.seconds:.1f} s ({summary.messages_per_s:,.0f} messages/s)."
    )
    if summary.skipped:
        out.print(
            f"Skipped {summary.skipped:,} trees already imported (earlier, or higher up in these files)."
        )


def _run_import(database_url: str | None, files: list[Path], options: ImportOptions) -> ImportSummary:
    from sqlalchemy.exc import SQLAlchemyError

    from oasst.backend.errors import OasstError
    from oasst.backend.services.importer import ImportProgress, import_files

    settings = load_backend_settings(database_url=database_url)
    database = _open_database(database_url)
    hint = "Fix the cause and import again: trees imported before are skipped."
    try:
        with _progress() as progress:
            task = progress.add_task("reading", total=None)
            phase = ["validating"]

            def on_progress(p: ImportProgress) -> None:
                if p.phase != phase[0]:  # restart the rate: reading alone is much faster than importing
                    phase[0] = p.phase
                    progress.reset(task)
                what = f"{p.phase} {Path(p.path).name}: {p.messages:,} messages, {p.trees:,} trees"
                progress.update(task, completed=p.messages, description=what)

            return import_files(
                database, files, cfg=settings.tree_manager, options=options, on_progress=on_progress
            )
    except OasstError as exc:
        fail(exc.message, hint)
    except SQLAlchemyError as exc:
        fail(f"The import failed: {_reason(exc)}", hint)
    finally:
        database.dispose()


def _check_states(states: list[str], *, allow_all: bool) -> None:
    from oasst.backend.models import TreeState

    known = {s.value for s in TreeState} | ({"all"} if allow_all else set())
    unknown = sorted(set(states) - known)
    if unknown:
        fail(f"Unknown tree state {', '.join(map(repr, unknown))}.", f"Use one of: {STATES}.")


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]


def _open_database(database_url: str | None) -> Database:
    from oasst.backend.db import Database
    from oasst.backend.migrate import current_revision

    settings = load_backend_settings(database_url=database_url)
    engine = open_engine(settings, must_exist=True)
    if current_revision(engine) is None:
        engine.dispose()
        fail("The database has no oasst schema yet.", "Create it first with: oasst db upgrade")
    return Database(engine, max_retries=settings.db_max_tx_retries)


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _progress() -> Progress:
    from rich.progress import Progress, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class MessagesPerSecond(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("" if speed is None else f"{speed:,.0f} messages/s", style="progress.data.speed")

    err = console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), MessagesPerSecond(), TimeElapsedColumn())
    return Progress(*columns, console=err, transient=True, disable=not err.is_terminal)
