"""``oasst eval ...``: judge trained models — sampling reports, reward-model accuracy, win rates.

The work is done by `oasst.training.evaluate`, imported inside each command (it needs torch and
transformers), so ``oasst --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from oasst.cli import console, fail

app = typer.Typer(
    name="eval",
    help="Evaluate models: sampling reports, reward-model accuracy on held-out rankings, win rates.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

ModelDir = Annotated[Path, typer.Option("--model", help="The model directory to sample from.")]
RewardDir = Annotated[
    Path, typer.Option("--reward-model", help="A reward model directory (`oasst train rm`).")
]
Prompts = Annotated[
    Path,
    typer.Option(
        "--prompts", help="An oasst export, a JSONL of prompts ({'prompt': ...} or strings), or a text file."
    ),
]
MaxPrompts = Annotated[
    int | None, typer.Option("--max-prompts", min=1, help="Use only the first N prompts.", show_default=False)
]
Langs = Annotated[
    list[str] | None,
    typer.Option("--lang", help="Only prompts/groups in this language (repeatable).", show_default=False),
]


def register(root: typer.Typer) -> None:
    """Add the ``eval`` group to the root ``oasst`` app."""
    root.add_typer(app, name="eval")


def _failed(exc: Exception) -> NoReturn:
    if isinstance(exc, FileNotFoundError):
        fail(str(exc), "Check the path; model directories hold a config.json.")
    fail(str(exc))


def _load_prompts(path: Path, max_prompts: int | None, langs: list[str] | None) -> list[Any]:
    from oasst.training.evaluate import load_prompts

    return load_prompts(path, limit=max_prompts, langs=langs or ())


@app.command("sampling")
def sampling_command(
    model: ModelDir,
    prompts: Prompts,
    out: Annotated[
        Path, typer.Option("--out", help="The JSON report; a Markdown summary is written beside it (.md).")
    ] = Path("sampling-report.json"),
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Sampling settings (YAML, see configs/eval/sampling-default.yaml); default: greedy only.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    reward_model: Annotated[
        Path | None, typer.Option("--reward-model", help="Score every output with this reward model.")
    ] = None,
    max_prompts: MaxPrompts = None,
    lang: Langs = None,
) -> None:
    """Answer every prompt with every sampling setting; write a JSON report and a Markdown summary.

    With `--reward-model` each output gets a score, and the summary shows the mean score per setting.
    """
    from oasst.training.evaluate import load_sampling_config, sampling_report, write_report

    try:
        sampling = load_sampling_config(config)
        prompt_list = _load_prompts(prompts, max_prompts, lang)
        report = sampling_report(model, prompt_list, sampling, reward_model=reward_model, show_progress=True)
    except (ValueError, FileNotFoundError) as exc:
        _failed(exc)
    json_path, md_path = write_report(report, out)
    _print_summary(report["summary"])
    console().print(f"[green]Done:[/] {json_path} and {md_path}")


def _print_summary(summary: dict[str, dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table("setting", "samples", "mean length", "mean score", title="Sampling report")
    for name, row in summary.items():
        score = "–" if row["mean_score"] is None else f"{row['mean_score']:.3f}"
        table.add_row(name, str(row["samples"]), str(row["mean_length_chars"]), score)
    console().print(table)


@app.command("rm")
def rm_command(
    reward_model: RewardDir,
    data: Annotated[
        Path, typer.Option("--data", help="An oasst export or RM-group records with ranked replies.")
    ],
    split: Annotated[
        str, typer.Option("--split", help="validation (trees held out in training), train, or all.")
    ] = "validation",
    val_fraction: Annotated[
        float | None,
        typer.Option("--val-fraction", min=0.0, max=1.0, help="Default: what the model was trained with."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Split seed; default: the model's training seed.", show_default=False)
    ] = None,
    lang: Langs = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also write the metrics as JSON here.", show_default=False)
    ] = None,
) -> None:
    """Accuracy, Kendall tau and Spearman rho of a reward model on ranked replies it did not train on.

    The split is by tree, with the reward model's own training settings unless overridden, so
    `validation` holds exactly the prompts it never saw.
    """
    from oasst.training.evaluate import evaluate_reward_model

    try:
        metrics = evaluate_reward_model(
            reward_model,
            data,
            split=split,
            langs=lang,
            val_fraction=val_fraction,
            seed=seed,
            show_progress=True,
        )
    except (ValueError, FileNotFoundError) as exc:
        _failed(exc)
    from rich.table import Table

    table = Table("metric", "value", title=f"Reward model on {split} groups")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if key != "groups" else str(int(value)))
    console().print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(metrics, indent=2) + "\n")


@app.command("winrate")
def winrate_command(
    model: Annotated[Path, typer.Option("--model", help="The model to judge (e.g. after RL).")],
    baseline: Annotated[
        Path, typer.Option("--baseline", help="The model to compare with (e.g. the SFT one).")
    ],
    reward_model: RewardDir,
    prompts: Prompts,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="Sampling settings (YAML); default: greedy.", exists=True, dir_okay=False
        ),
    ] = None,
    setting: Annotated[
        str | None, typer.Option("--setting", help="Which setting of --config to use; default: its first.")
    ] = None,
    max_prompts: MaxPrompts = None,
    lang: Langs = None,
    confidence: Annotated[float, typer.Option(min=0.5, max=0.999, help="Confidence of the interval.")] = 0.95,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Write the result, with every reply and score, as JSON.", show_default=False
        ),
    ] = None,
) -> None:
    """Win rate of `--model` over `--baseline` under a reward model (ties count half).

    Both answer every prompt with the same sampling setting and seed; the interval is a bootstrap over
    prompts.
    """
    from oasst.training.evaluate import compare_models, load_sampling_config

    try:
        sampling = load_sampling_config(config)
        name = setting or next(iter(sampling.settings))
        if name not in sampling.settings:
            raise ValueError(f"no setting {name!r} in {config}; it has {', '.join(sampling.settings)}")
        result = compare_models(
            model,
            baseline,
            reward_model,
            _load_prompts(prompts, max_prompts, lang),
            params=sampling.settings[name],
            max_new_tokens=sampling.max_new_tokens,
            batch_size=sampling.batch_size,
            seed=sampling.seed,
            confidence=confidence,
            show_progress=True,
        )
    except (ValueError, FileNotFoundError) as exc:
        _failed(exc)
    console().print(
        f"Win rate of {model} over {baseline}: [bold]{result['rate']:.3f}[/] "
        f"({result['confidence']:.0%} CI {result['low']:.3f}–{result['high']:.3f}); "
        f"{result['wins']} wins, {result['ties']} ties, {result['losses']} losses on {result['prompts']} prompts; "
        f"mean score {result['mean_score_model']:.3f} vs {result['mean_score_baseline']:.3f}."
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
