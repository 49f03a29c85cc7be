"""``oasst data ...``: training datasets from oasst exports and instruction data.

``stats`` counts what an export holds and how many training examples it gives; ``convert`` turns an export
(or Alpaca, ShareGPT, OpenAI, prompt/response or Hugging Face data) into training JSONL; ``filter`` keeps
the export format; ``split`` holds out whole trees for validation; ``mix`` builds a mix from a YAML config.
Everything heavy is imported inside the commands.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from oasst.cli import console, fail

if TYPE_CHECKING:
    from rich.progress import Progress

    from oasst.data import ExportMessageTree
    from oasst.training.datasets import Record, TreeFilter
    from oasst.training.datasets_stats import ExportStats

T = TypeVar("T")

app = typer.Typer(
    name="data",
    help="Training datasets: statistics, conversion, filtering, splitting and mixing of exports.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


def register(root: typer.Typer) -> None:
    """Add the ``data`` group to the root ``oasst`` app."""
    root.add_typer(app, name="data")


class ToKind(StrEnum):
    sft = "sft"
    rm = "rm"
    dpo = "dpo"
    rl = "rl"


class FromFormat(StrEnum):
    oasst = "oasst"
    alpaca = "alpaca"
    sharegpt = "sharegpt"
    openai = "openai"
    prompt_response = "prompt-response"
    hf_disk = "hf-disk"


class PairingChoice(StrEnum):
    all = "all"
    best = "best"


def _opt(*names: str, help: str, **kwargs: Any) -> Any:
    return typer.Option(*names, help=help, show_default=False, **kwargs)


InputArg = Annotated[Path, typer.Argument(help="An oasst export: trees or messages, .jsonl or .jsonl.gz.")]
LangOption = Annotated[
    list[str] | None, _opt("--lang", help="Languages of the initial prompt: en,de or repeat the option.")
]
StateOption = Annotated[
    list[str] | None,
    _opt("--state", help="Tree states to keep (repeatable), or 'all'. Default: ready_for_export."),
]
PerMessageLangOption = Annotated[
    bool, typer.Option("--per-message-lang", help="Also drop messages in other languages than --lang.")
]
DeletedOption = Annotated[bool, typer.Option("--include-deleted", help="Keep deleted messages.")]
RejectedOption = Annotated[
    bool, typer.Option("--include-rejected", help="Keep messages that review rejected (review_result false).")
]
SyntheticOption = Annotated[
    bool, typer.Option("--include-synthetic", help="Keep synthetic (model) messages.")
]
MinLengthOption = Annotated[
    int, typer.Option("--min-length", min=0, help="Drop messages shorter than this many characters.")
]
MaxLengthOption = Annotated[
    int | None, _opt("--max-length", min=1, help="Drop messages longer than this many characters.")
]
TopKOption = Annotated[
    int | None, _opt("--top-k", min=1, help="SFT: only threads through replies ranked among the k best.")
]
BestPathOption = Annotated[
    bool, typer.Option("--best-path", help="SFT: one thread per tree, following the best-ranked replies.")
]
PairingOption = Annotated[
    PairingChoice,
    typer.Option(
        "--pairs", help="DPO: every ranked pair (all), or the best reply against each other (best)."
    ),
]


def _tree_filter(
    lang: list[str] | None,
    state: list[str] | None,
    per_message_lang: bool,
    include_deleted: bool,
    include_rejected: bool,
    include_synthetic: bool,
    min_length: int,
    max_length: int | None,
) -> TreeFilter:
    from oasst.training.datasets import TreeFilter

    langs = {part.strip() for item in lang or () for part in item.split(",") if part.strip()}
    states = {part.strip() for item in state or () for part in item.split(",") if part.strip()}
    if per_message_lang and not langs:
        fail("--per-message-lang needs --lang.")
    return TreeFilter(
        langs=frozenset(langs) if langs else None,
        per_message_lang=per_message_lang,
        states=None if "all" in states else frozenset(states or {"ready_for_export"}),
        include_deleted=include_deleted,
        include_rejected=include_rejected,
        include_synthetic=include_synthetic,
        min_length=min_length,
        max_length=max_length,
    )


# --- progress and errors ---------------------------------------------------------------------------


def _progress() -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    err = console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=err, transient=True, disable=not err.is_terminal)


def _count_lines(path: Path) -> int | None:
    """Lines of a file (for the progress bar's total); None for stdin or a JSON array."""
    from oasst.data import open_jsonl

    try:
        with open_jsonl(path) as stream:
            return sum(1 for line in stream if line.strip())
    except (OSError, EOFError, ValueError):
        return None  # the reader reports it properly


def _tracked(items: Iterable[T], progress: Progress, description: str, total: int | None) -> Iterator[T]:
    task = progress.add_task(description, total=total)
    for item in items:
        yield item
        progress.advance(task)


def _check_input(path: Path, *, directory: bool = False) -> None:
    if not path.exists():
        fail(f"There is no file {path}.", "Check the path.")
    if directory and not path.is_dir():
        fail(f"{path} is not a directory.", "A Hugging Face dataset saved with save_to_disk is a directory.")
    if not directory and path.is_dir():
        fail(f"{path} is a directory, not a file.")


def _read_trees(path: Path, progress: Progress) -> Iterator[ExportMessageTree]:
    from oasst.data import read_message_trees

    # a line is a tree in tree files; in flat files lines are messages, so the number of trees is unknown
    total = _count_lines(path) if not progress.disable and _first_line_is_tree(path) else None
    return _tracked(read_message_trees(path), progress, f"reading {path.name}", total)


def _first_line_is_tree(path: Path) -> bool:
    from oasst.data import open_jsonl

    try:
        with open_jsonl(path) as stream:
            first = next((line for line in stream if line.strip()), "")
    except (OSError, EOFError, ValueError):
        return False
    return ('"prompt"' if isinstance(first, str) else b'"prompt"') in first


BAD_DATA_HINT = "Fix or remove that line, then run the command again."


# --- stats -----------------------------------------------------------------------------------------


@app.command("stats")
def stats_command(
    file: InputArg,
    lang: LangOption = None,
    state: StateOption = None,
    per_message_lang: PerMessageLangOption = False,
    include_deleted: DeletedOption = False,
    include_rejected: RejectedOption = False,
    include_synthetic: SyntheticOption = False,
    min_length: MinLengthOption = 0,
    max_length: MaxLengthOption = None,
    top_k: TopKOption = None,
    best_path: BestPathOption = False,
    pairs: PairingOption = PairingChoice.all,
) -> None:
    """What an export holds (trees, messages per language, role and state) and the training examples it
    gives: SFT threads, reward-model groups, DPO pairs and RL prompts of the trees passing the filters."""
    from oasst.data import OasstDataError
    from oasst.training.datasets_stats import export_stats

    _check_input(file)
    tree_filter = _tree_filter(
        lang,
        state,
        per_message_lang,
        include_deleted,
        include_rejected,
        include_synthetic,
        min_length,
        max_length,
    )
    try:
        with _progress() as progress:
            stats = export_stats(
                _read_trees(file, progress),
                tree_filter,
                top_k=top_k,
                best_path=best_path,
                pairing=pairs.value,
            )
    except OasstDataError as exc:
        fail(str(exc), BAD_DATA_HINT)
    _print_stats(file, stats)


def _print_stats(file: Path, stats: ExportStats) -> None:
    from rich.table import Table

    out = console()
    overview = Table("", "count", title=f"{file.name}")
    overview.add_row("trees", f"{stats.trees:,}")
    overview.add_row("messages", f"{stats.messages:,}")
    for role, count in sorted(stats.roles.items()):
        overview.add_row(f"  {role}", f"{count:,}")
    overview.add_row("ranked groups (≥2 ranked replies)", f"{stats.ranked_groups:,}")
    out.print(overview)
    states = Table("tree state", "trees", title="Trees per state")
    for name, count in stats.states.most_common():
        states.add_row(name, f"{count:,}")
    out.print(states)
    langs = Table("language", "messages", title="Messages per language")
    for name, count in stats.langs.most_common():
        langs.add_row(name, f"{count:,}")
    out.print(langs)
    usable = Table("training examples", "count", title="Training examples of the trees passing the filters")
    usable.add_row("trees passing the filters", f"{stats.usable_trees:,}")
    usable.add_row("SFT threads", f"{stats.sft_threads:,}")
    usable.add_row("RM groups", f"{stats.rm_groups:,}")
    usable.add_row("DPO pairs", f"{stats.dpo_pairs:,}")
    usable.add_row("RL prompts", f"{stats.rl_prompts:,}")
    out.print(usable)


# --- convert ---------------------------------------------------------------------------------------


@app.command("convert")
def convert_command(
    input: Annotated[Path, typer.Argument(help="The input: an oasst export, a file of --from, or a folder.")],
    output: Annotated[Path, typer.Argument(help="Training JSONL to write: .jsonl or .jsonl.gz.")],
    to: Annotated[ToKind, typer.Option("--to", help="The records to make.")] = ToKind.sft,
    from_: Annotated[
        FromFormat, typer.Option("--from", help="The input's format; all but oasst give SFT records.")
    ] = FromFormat.oasst,
    split: Annotated[str | None, _opt("--split", help="hf-disk: the split of a DatasetDict.")] = None,
    lang: LangOption = None,
    state: StateOption = None,
    per_message_lang: PerMessageLangOption = False,
    include_deleted: DeletedOption = False,
    include_rejected: RejectedOption = False,
    include_synthetic: SyntheticOption = False,
    min_length: MinLengthOption = 0,
    max_length: MaxLengthOption = None,
    top_k: TopKOption = None,
    best_path: BestPathOption = False,
    pairs: PairingOption = PairingChoice.all,
) -> None:
    """Turn an export into training records (OpenAI-style messages, as TRL takes them): SFT threads,
    reward-model groups, DPO pairs or RL prompts. With `--from`, convert instruction data into SFT records."""
    from oasst.data import OasstDataError
    from oasst.training.datasets import TreeFilter, extract
    from oasst.training.datasets_io import write_records

    tree_filter = _tree_filter(
        lang,
        state,
        per_message_lang,
        include_deleted,
        include_rejected,
        include_synthetic,
        min_length,
        max_length,
    )
    if from_ != FromFormat.oasst:
        _check_input(input, directory=from_ == FromFormat.hf_disk)
        if to != ToKind.sft:
            fail(f"--from {from_.value} gives SFT records only.", "Use --to sft (the default).")
        if tree_filter != TreeFilter() or top_k is not None or best_path or pairs != PairingChoice.all:
            fail("Filters, --top-k, --best-path and --pairs apply to oasst exports only.")
    else:
        _check_input(input)
        if split is not None:
            fail("--split only applies to --from hf-disk.")
        if to != ToKind.sft and (top_k is not None or best_path):
            fail("--top-k and --best-path only apply to --to sft.")
        if to != ToKind.dpo and pairs != PairingChoice.all:
            fail("--pairs only applies to --to dpo.")
    try:
        with _progress() as progress:
            records: Iterable[Record]
            if from_ == FromFormat.oasst:
                trees = _read_trees(input, progress)
                records = extract(
                    trees, to.value, tree_filter, top_k=top_k, best_path=best_path, pairing=pairs.value
                )
            else:
                records = _adapted(input, from_, split, progress)
            written = write_records(output, records)
    except OasstDataError as exc:
        fail(str(exc), BAD_DATA_HINT)
    except OSError as exc:
        fail(f"Could not write {output}: {exc.strerror or exc}")
    console(stderr=True).print(f"[green]✓[/] Wrote {written:,} {to.value} records to {output}.")


def _adapted(input: Path, fmt: FromFormat, split: str | None, progress: Progress) -> Iterator[Record]:
    from oasst.training.formats import FORMATS, read_format

    name = next(f for f in FORMATS if f == fmt.value)  # the Literal the reader takes
    total = None if fmt == FromFormat.hf_disk or progress.disable else _count_lines(input)
    return _tracked(read_format(input, name, split=split), progress, f"converting {input.name}", total)


# --- filter ----------------------------------------------------------------------------------------


@app.command("filter")
def filter_command(
    input: InputArg,
    output: Annotated[Path, typer.Argument(help="The filtered export: .jsonl or .jsonl.gz.")],
    lang: LangOption = None,
    state: StateOption = None,
    per_message_lang: PerMessageLangOption = False,
    include_deleted: DeletedOption = False,
    include_rejected: RejectedOption = False,
    include_synthetic: SyntheticOption = False,
    min_length: MinLengthOption = 0,
    max_length: MaxLengthOption = None,
) -> None:
    """Keep the trees that pass the filters, without the messages that fail them (and their replies).

    The output is an oasst export again (one tree per line), which every other command reads.
    """
    from oasst.data import OasstDataError, write_message_trees
    from oasst.training.datasets import filter_trees

    _check_input(input)
    tree_filter = _tree_filter(
        lang,
        state,
        per_message_lang,
        include_deleted,
        include_rejected,
        include_synthetic,
        min_length,
        max_length,
    )
    try:
        with _progress() as progress:
            written = write_message_trees(output, filter_trees(_read_trees(input, progress), tree_filter))
    except OasstDataError as exc:
        fail(str(exc), BAD_DATA_HINT)
    except OSError as exc:
        fail(f"Could not write {output}: {exc.strerror or exc}")
    console(stderr=True).print(f"[green]✓[/] Wrote {written:,} trees to {output}.")


# --- split -----------------------------------------------------------------------------------------


@app.command("split")
def split_command(
    input: Annotated[Path, typer.Argument(help="An oasst export, or training records from `convert`.")],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where train and validation files go.")],
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", min=0.0, max=1.0, help="Share of trees held out.")
    ] = 0.1,
    seed: Annotated[int, typer.Option(help="Another seed holds out other trees.")] = 0,
    gzip: Annotated[bool, typer.Option("--gzip", help="Write .jsonl.gz files.")] = False,
) -> None:
    """Split by tree into train and validation, so no conversation tree is on both sides.

    An export gives `train.trees.jsonl` and `validation.trees.jsonl`; records give `train.jsonl` and
    `validation.jsonl`. The same seed always gives the same split.
    """
    from oasst.data import OasstDataError

    _check_input(input)
    suffix = ".jsonl.gz" if gzip else ".jsonl"
    try:
        is_export = _looks_like_export(input)
        out_dir.mkdir(parents=True, exist_ok=True)
        with _progress() as progress:
            if is_export:
                counts = _split_export(input, out_dir, suffix, val_fraction, seed, progress)
                what = "trees"
            else:
                counts = _split_records(input, out_dir, suffix, val_fraction, seed, progress)
                what = "records"
    except OasstDataError as exc:
        fail(str(exc), BAD_DATA_HINT)
    except OSError as exc:
        fail(f"Could not write to {out_dir}: {exc.strerror or exc}")
    console(stderr=True).print(
        f"[green]✓[/] {counts[0]:,} {what} for training and {counts[1]:,} for validation in {out_dir}."
    )


def _looks_like_export(path: Path) -> bool:
    from oasst.data import OasstDataError, open_jsonl

    with open_jsonl(path) as stream:
        for lineno, line in enumerate(stream, start=1):
            if line.strip():
                try:
                    first = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise OasstDataError(f"invalid JSON: {exc}", path=str(path), line=lineno) from exc
                return isinstance(first, dict) and (
                    "message_id" in first or {"message_tree_id", "prompt"} <= first.keys()
                )
    raise OasstDataError("the file is empty", path=str(path))


def _split_export(
    path: Path, out_dir: Path, suffix: str, val_fraction: float, seed: int, progress: Progress
) -> tuple[int, int]:
    from oasst.data import write_message_trees
    from oasst.training.datasets import split_key, split_of

    counts = []
    for side in ("train", "validation"):
        trees = (
            tree
            for tree in _read_trees(path, progress)
            if split_of(split_key(tree), val_fraction, seed) == side
        )
        counts.append(write_message_trees(out_dir / f"{side}.trees{suffix}", trees))
    return counts[0], counts[1]


def _split_records(
    path: Path, out_dir: Path, suffix: str, val_fraction: float, seed: int, progress: Progress
) -> tuple[int, int]:
    from oasst.training.datasets import split_key, split_of
    from oasst.training.datasets_io import read_records, write_records

    total = None if progress.disable else _count_lines(path)
    counts = []
    for side in ("train", "validation"):
        records = _tracked(read_records(path), progress, f"{side}: reading {path.name}", total)
        kept = (r for r in records if split_of(split_key(r), val_fraction, seed) == side)
        counts.append(write_records(out_dir / f"{side}{suffix}", kept))
    return counts[0], counts[1]


# --- mix -------------------------------------------------------------------------------------------


@app.command("mix")
def mix_command(
    config: Annotated[Path, typer.Argument(help="A YAML mix config (see configs/data/).")],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where train.jsonl and validation.jsonl go.")],
    gzip: Annotated[bool, typer.Option("--gzip", help="Write .jsonl.gz files.")] = False,
) -> None:
    """Mix several datasets as a YAML config says (fraction or size of each), split by tree into
    train.jsonl and validation.jsonl, and show how many records each dataset gave."""
    from rich.table import Table

    from oasst.data import OasstDataError
    from oasst.training.mixing import MixError, build_mix, load_mix_config, write_mix

    _check_input(config)
    try:
        mix_config = load_mix_config(config)
        with _progress() as progress:
            tasks: dict[str, Any] = {}

            def on_progress(name: str, done: int) -> None:
                if name not in tasks:
                    tasks[name] = progress.add_task(f"reading {name}", total=None)
                progress.update(tasks[name], completed=done)

            result = build_mix(mix_config, on_progress=on_progress)
            train_path, val_path = write_mix(result, out_dir, gzip=gzip)
    except MixError as exc:
        fail(str(exc), "See docs/training/data.md for the mix config's keys.")
    except OasstDataError as exc:
        fail(str(exc), BAD_DATA_HINT)
    except OSError as exc:
        fail(f"Could not write to {out_dir}: {exc.strerror or exc}")
    table = Table("dataset", "available", "train", "validation", title=f"{mix_config.kind} mix")
    for d in result.datasets:
        table.add_row(d.name, f"{d.available:,}", f"{d.train:,}", f"{d.validation:,}")
    table.add_row(
        "[bold]all[/]", "", f"[bold]{len(result.train):,}[/]", f"[bold]{len(result.validation):,}[/]"
    )
    console().print(table)
    console(stderr=True).print(f"[green]✓[/] Wrote {train_path} and {val_path}.")
