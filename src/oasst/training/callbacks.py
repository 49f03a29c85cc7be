"""A Rich progress bar for Hugging Face trainers (and for hand-written loops through ``RichProgress``)."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback


class RichProgress:
    """One progress bar with the latest metrics beside it; usable as a context manager in any loop."""

    def __init__(self, description: str, total: int | None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[metrics]}"),
            transient=False,
        )
        self._task = self._progress.add_task(description, total=total, metrics="")

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, completed: int, metrics: dict[str, float] | None = None) -> None:
        shown = "  ".join(f"{k} {v:.4g}" for k, v in (metrics or {}).items())
        if metrics is None:
            self._progress.update(self._task, completed=completed)
        else:
            self._progress.update(self._task, completed=completed, metrics=shown)


class RichProgressCallback(TrainerCallback):
    """Replaces the trainer's tqdm bar: steps done, time left, and the last logged loss and metrics."""

    KEYS = (
        "loss",
        "train_loss",
        "eval_loss",
        "accuracy",
        "eval_accuracy",
        "rewards/accuracies",
        "reward",
        "kl",
    )

    def __init__(self, description: str) -> None:
        self.description = description
        self._bar: RichProgress | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self._bar = RichProgress(self.description, state.max_steps).__enter__()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._bar is not None:
            self._bar.update(state.global_step)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if self._bar is not None and logs:
            shown = {k: float(v) for k, v in logs.items() if k in self.KEYS and isinstance(v, int | float)}
            self._bar.update(state.global_step, shown)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def use_rich_progress(trainer: Any, description: str) -> None:
    """Swap a transformers/TRL trainer's tqdm progress callback for the Rich one."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(RichProgressCallback(description))
