"""``oasst inference export`` and ``oasst inference synthesize``: the two commands that close the loop.

``export`` turns the chats people allowed us to use into an oasst export and preference records for
training; ``synthesize`` has a model answer prompter messages of growing backend trees, so that volunteers
review and rank model output beside human replies. See ``docs/inference/closing-the-loop.md``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from oasst.cli import console, fail, redact_url

if TYPE_CHECKING:
    from oasst.client import BackendClient
    from oasst.data import ExportMessageTree
    from oasst.inference.loop import ChatRecord, LoopOptions, PreferencePair
    from oasst.inference.worker.engines import Engine
    from oasst.protocol.common import SyntheticCandidate

TREES_FILE = "chats.trees.jsonl"
DPO_FILE = "preferences.dpo.jsonl"
RM_FILE = "preferences.rm.jsonl"
MODEL_FAILED = "the model failed"


def register_loop(app: typer.Typer) -> None:
    """Add ``export`` and ``synthesize`` to the ``oasst inference`` group."""
    app.command("export")(export_command)
    app.command("synthesize")(synthesize_command)


# ---------------------------------------------------------------------------------------------- export


@dataclass
class ExportCounts:
    chats: int = 0
    trees: int = 0
    messages: int = 0
    pairs: Counter[str] = field(default_factory=Counter)
    rm_groups: int = 0


def export_command(
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where the three files are written.")],
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="OASST_INFERENCE_DATABASE_URL",
            help="The inference server's database (default: sqlite:///oasst-inference.db).",
            show_default=False,
        ),
    ] = None,
    since: Annotated[
        datetime | None,
        typer.Option(
            help="Only chats changed at or after this date (UTC), e.g. 2024-05-01.", show_default=False
        ),
    ] = None,
    lang: Annotated[
        str | None,
        typer.Option(
            help="Language code of the chats (the chat API records none; default 'und').", show_default=False
        ),
    ] = None,
    neutral_is_rejected: Annotated[
        bool, typer.Option(help="Votes: a +1 reply is also preferred over unvoted siblings.")
    ] = False,
    include_system: Annotated[
        bool, typer.Option(help="Start preference prompts with the chat's system prompt.")
    ] = False,
    anonymizer_seed: Annotated[
        str | None,
        typer.Option(
            help="Replace message, user and tree ids by keyed hashes (keep the seed secret).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write opted-in chats as oasst trees, and votes and draft picks as DPO pairs and RM groups.

    Files in OUT_DIR: chats.trees.jsonl (oasst export), preferences.dpo.jsonl and preferences.rm.jsonl
    (training records: `oasst train dpo` / `oasst train rm` read them). Chats whose owner turned data use
    off, deleted chats and API-only requests are never read.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from oasst.cli.inference_cmds import load_settings
    from oasst.data import Anonymizer, OasstDataError
    from oasst.inference.loop import LoopOptions
    from oasst.inference.server.db import Database, make_engine

    settings = load_settings(database_url=database_url)
    url = settings.database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        fail(f"No inference database at {url}.", "Pass --database-url (or OASST_INFERENCE_DATABASE_URL).")
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    options = LoopOptions(
        lang=lang,
        neutral_is_rejected=neutral_is_rejected,
        include_system=include_system,
        anonymizer=Anonymizer(anonymizer_seed) if anonymizer_seed else None,
    )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"Cannot create {out_dir}: {exc}")
    database = Database(make_engine(settings))
    try:
        counts = database.read(lambda s: _export(s, out_dir, options, since))
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        fail(
            f"Could not read chats from {redact_url(url)}: {reason}",
            "Is this the inference server's database? `oasst inference serve` creates its tables.",
        )
    except (OSError, OasstDataError) as exc:
        fail(f"Could not write to {out_dir}: {exc}")
    finally:
        database.dispose()
    out = console()
    sources = ", ".join(f"{n} from {s.replace('_', ' ')}s" for s, n in sorted(counts.pairs.items())) or "none"
    out.print(f"Read {counts.chats} opted-in chats.")
    out.print(f"{out_dir / TREES_FILE}: {counts.trees} trees, {counts.messages} messages")
    out.print(f"{out_dir / DPO_FILE}: {sum(counts.pairs.values())} pairs ({sources})")
    out.print(f"{out_dir / RM_FILE}: {counts.rm_groups} groups")


def _export(session: Any, out_dir: Path, options: LoopOptions, since: datetime | None) -> ExportCounts:
    from oasst.data import count_messages, write_message_trees
    from oasst.inference.loop import chat_preferences, chat_to_trees, dpo_record, rm_records
    from oasst.inference.server.services.export import iter_opted_in_chats
    from oasst.training.datasets_io import write_records

    counts = ExportCounts()
    pairs: list[PreferencePair] = []

    def trees() -> Iterator[ExportMessageTree]:
        record: ChatRecord
        for record in iter_opted_in_chats(session):
            if since is not None and record.chat.modified_at < since:
                continue
            counts.chats += 1
            pairs.extend(chat_preferences(record, options))
            for tree in chat_to_trees(record, options):
                counts.trees += 1
                counts.messages += count_messages(tree)
                yield tree

    write_message_trees(out_dir / TREES_FILE, trees(), exclude_none=True)
    counts.pairs.update(p.source for p in pairs)
    write_records(out_dir / DPO_FILE, (dpo_record(p, options) for p in pairs))
    counts.rm_groups = write_records(out_dir / RM_FILE, rm_records(pairs))
    return counts


# ------------------------------------------------------------------------------------------ synthesize


@dataclass
class SynthesisReport:
    candidates: int = 0
    inserted: int = 0
    model_failures: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def synthesize_command(
    api_key: Annotated[
        str, typer.Option("--api-key", envvar="OASST_API_KEY", help="A trusted API key of the backend.")
    ],
    backend_url: Annotated[
        str, typer.Option("--backend-url", envvar="OASST_URL", help="The backend's base URL.")
    ] = "http://127.0.0.1:8080",
    model: Annotated[
        str | None,
        typer.Option(help="Generate in this process with a model directory (or hub id).", show_default=False),
    ] = None,
    inference_url: Annotated[
        str | None,
        typer.Option(
            help="Generate through an OpenAI-compatible server (oasst inference /v1, vLLM, ...).",
            show_default=False,
        ),
    ] = None,
    inference_key: Annotated[
        str | None,
        typer.Option(
            envvar="OASST_INFERENCE_API_KEY", help="Bearer key of --inference-url.", show_default=False
        ),
    ] = None,
    model_name: Annotated[
        str | None,
        typer.Option(
            help="Name stored on the replies (and the model asked for at --inference-url). "
            "Default: the model directory's name, or the server's first model.",
            show_default=False,
        ),
    ] = None,
    lang: Annotated[str, typer.Option(help="Language of the trees to answer.")] = "en",
    max_replies: Annotated[
        int, typer.Option("--max", min=1, max=1000, help="Replies to generate at most.")
    ] = 10,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens per reply at most.")] = 256,
    temperature: Annotated[float, typer.Option(min=0.0, help="Sampling temperature (0: greedy).")] = 0.8,
    seed: Annotated[int | None, typer.Option(help="Sampling seed.", show_default=False)] = None,
    keep_truncated: Annotated[
        bool, typer.Option(help="Also post replies cut off at --max-new-tokens (default: skip them).")
    ] = False,
    device: Annotated[str, typer.Option(help="--model: auto, cpu, cuda, cuda:1 ...")] = "auto",
) -> None:
    """Have a model answer prompter messages of growing trees; post its replies as synthetic messages.

    Volunteers then review them and rank them beside human replies. Each model answers a message at most
    once, and the trees' limits hold as for human replies.
    """
    if (model is None) == (inference_url is None):
        fail("Say which model writes the replies.", "Pass either --model DIR or --inference-url URL.")
    import asyncio

    from oasst.client import OasstApiError, OasstConnectionError
    from oasst.inference.worker.engines import EngineError, make_engine

    try:
        engine = make_engine(
            model=model,
            upstream=inference_url,
            upstream_key=inference_key,
            upstream_model=model_name if inference_url else None,
            name=model_name,
            device=device,
        )
    except EngineError as exc:
        fail(str(exc), "Check --model: a model directory with a tokenizer and a chat template.")
    settings = _Sampling(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    try:
        report = asyncio.run(
            _synthesize(
                engine,
                backend_url=backend_url,
                api_key=api_key,
                lang=lang,
                max_replies=max_replies,
                sampling=settings,
                keep_truncated=keep_truncated,
            )
        )
    except EngineError as exc:
        fail(f"The model could not start: {exc}")
    except OasstConnectionError as exc:
        fail(str(exc), "Is the backend running? Check --backend-url.")
    except OasstApiError as exc:
        hint = "The key must be a trusted one (`oasst keys create --trusted`)." if exc.status == 403 else None
        fail(f"The backend refused: {exc}", hint)
    _print_synthesis(report, engine.model_name)
    if report.candidates and report.model_failures == report.candidates:
        fail(
            "The model failed on every conversation.",
            "Check --model, or --inference-url, --inference-key and --model-name.",
        )


@dataclass(frozen=True)
class _Sampling:
    max_new_tokens: int
    temperature: float
    seed: int | None


async def _synthesize(
    engine: Engine,
    *,
    backend_url: str,
    api_key: str,
    lang: str,
    max_replies: int,
    sampling: _Sampling,
    keep_truncated: bool,
    client: BackendClient | None = None,
) -> SynthesisReport:
    from oasst.client import BackendClient

    report = SynthesisReport()
    await engine.start()
    try:
        backend = client or BackendClient(backend_url, api_key, timeout=60)
        try:
            candidates = await backend.synthetic_candidates(
                lang=lang, model_name=engine.model_name, max_count=max_replies
            )
            report.candidates = len(candidates)
            with _progress() as progress:
                task = progress.add_task(f"Replies by {engine.model_name}", total=len(candidates))
                for candidate in candidates:
                    reason = await _answer(engine, backend, candidate, sampling, keep_truncated)
                    if reason is None:
                        report.inserted += 1
                    else:
                        report.skipped[reason] += 1
                        report.model_failures += reason.startswith(MODEL_FAILED)
                    progress.advance(task)
        finally:
            if client is None:
                await backend.aclose()
    finally:
        await engine.aclose()
    return report


async def _answer(
    engine: Engine,
    backend: BackendClient,
    candidate: SyntheticCandidate,
    sampling: _Sampling,
    keep_truncated: bool,
) -> str | None:
    """Generate and post one reply; None when it was inserted, else why it was skipped."""
    import uuid

    from oasst.client import OasstApiError, OasstConnectionError
    from oasst.inference.protocol import ChatTurn, FinishReason, Role, SamplingParameters, WorkRequest
    from oasst.inference.worker.engines import EngineError, collect

    turns = [
        ChatTurn(role=Role.assistant if m.is_assistant else Role.user, content=m.text)
        for m in candidate.conversation.messages
    ]
    request = WorkRequest(
        id=str(uuid.uuid4()),
        model=engine.model_name,
        messages=turns,
        sampling=SamplingParameters(
            max_new_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            do_sample=sampling.temperature > 0,
            seed=sampling.seed,
        ),
    )
    try:
        text, _pieces, finished = await collect(engine, request)
    except EngineError as exc:
        return f"{MODEL_FAILED}: {exc}"
    if not text.strip():
        return "the model replied with nothing"
    if finished.finish_reason == FinishReason.length and not keep_truncated:
        return "cut off at --max-new-tokens (see --keep-truncated)"
    try:
        await backend.post_synthetic_reply(candidate.parent_id, text, engine.model_name, lang=candidate.lang)
    except OasstConnectionError:
        raise
    except OasstApiError as exc:
        if exc.status == 403:
            raise
        return f"refused by the backend: {exc.message} (error {exc.error_code})"
    return None


def _progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    err = console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=err, transient=True, disable=not err.is_terminal)


def _print_synthesis(report: SynthesisReport, model_name: str) -> None:
    out = console()
    if report.candidates == 0:
        out.print(f"No prompter message is waiting for a reply from {model_name}; nothing to do.")
        return
    skipped = sum(report.skipped.values())
    out.print(f"{model_name}: inserted {report.inserted} synthetic replies, skipped {skipped}.")
    for reason, n in report.skipped.most_common():
        out.print(f"  skipped {n}: {reason}")
