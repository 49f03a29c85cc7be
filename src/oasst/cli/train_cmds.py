"""``oasst train <kind>``: one command per trainer, each a config dataclass plus ``run(cfg)``.

Every trainer module ``oasst.training.<module>`` exposes ``CONFIG`` (its config dataclass, whose fields say
what they do) and ``run(cfg) -> Path`` (trains, writes a model directory with a model card, returns it).
The module is imported only when its command runs, so ``oasst --help`` needs no torch. Settings come from
``--config FILE.yaml`` and ``key=value`` overrides, and ``oasst train <kind> --settings`` lists them.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from oasst.cli import console, fail

app = typer.Typer(
    name="train",
    help="Train models from oasst exports: bootstrap a tiny model, SFT, reward model, DPO, PPO/GRPO/RLOO.",
    no_args_is_help=True,
)

TRAINERS: dict[str, tuple[str, str]] = {
    # command: (module under oasst.training, one-line help)
    "bootstrap": ("bootstrap", "Train a BPE tokenizer on a corpus and build a tiny Llama-style model."),
    "sft": ("sft", "Supervised fine-tuning on conversation threads (assistant tokens only)."),
    "rm": ("rm", "Reward model: scalar head, K-wise ranking loss over ranked replies."),
    "dpo": ("dpo", "Direct preference optimisation on pairs from rankings or chat feedback."),
    "ppo": ("ppo", "PPO against a reward model (frozen reference, adaptive KL, value head)."),
    "grpo": ("grpo", "GRPO or RLOO (TRL) with the same reward model."),
}


def register(root: typer.Typer) -> None:
    for name, (module, summary) in TRAINERS.items():
        app.command(name, help=summary + _SHARED_HELP, context_settings={"allow_extra_args": False})(
            _make_command(name, module)
        )
    root.add_typer(app)


_SHARED_HELP = (
    "\n\nSettings: --config FILE.yaml, then KEY=VALUE overrides (e.g. learning_rate=1e-4 max_steps=100). "
    "`--settings` lists every setting with its default and meaning."
)


def _make_command(name: str, module: str) -> Any:
    def command(
        overrides: Annotated[
            list[str] | None, typer.Argument(help="KEY=VALUE settings that override the config file.")
        ] = None,
        config: Annotated[
            Path | None,
            typer.Option("--config", "-c", help="YAML file of settings.", exists=True, dir_okay=False),
        ] = None,
        settings: Annotated[bool, typer.Option("--settings", help="List the settings and exit.")] = False,
    ) -> None:
        trainer = _load(module)
        if settings:
            _print_settings(name, trainer.CONFIG)
            return
        from oasst.training.common import ConfigError, load_config

        try:
            cfg = load_config(trainer.CONFIG, config, overrides or [])
        except ConfigError as exc:
            fail(f"Invalid settings: {exc}", f"See `oasst train {name} --settings`.")
        try:
            out = trainer.run(cfg)
        except (ValueError, FileNotFoundError) as exc:
            fail(str(exc))
        if os.environ.get("RANK", "0") == "0":  # under accelerate launch, only the main process says so
            console().print(f"[green]Done:[/] model written to {out}")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # leave without running destructors: torch's gloo process group can deadlock in its own
            # (it joins a worker thread with the GIL held while that thread waits for the GIL); every
            # rank has passed the trainer's final barrier and the model is saved
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    command.__name__ = f"train_{name}"
    return command


def _load(module: str) -> Any:
    try:
        return importlib.import_module(f"oasst.training.{module}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in {
            "torch",
            "transformers",
            "trl",
            "peft",
            "datasets",
            "accelerate",
        }:
            fail(f"Training needs {exc.name}, which is not installed.", "pip install 'oasst[train]'")
        raise


def _print_settings(name: str, config_cls: type[Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from oasst.training.common import describe_config

    table = Table(title=f"oasst train {name}: settings")
    table.add_column("setting", style="bold")
    table.add_column("default")
    table.add_column("what it does")
    for field_name, default, help_text in describe_config(config_cls):
        # plain text: help like "(e.g. [en, de])" would otherwise be read as Rich markup and vanish
        table.add_row(escape(field_name), escape(default), escape(help_text))
    console().print(table)
