"""``oasst train dpo``: direct preference optimisation on pairs of replies, with TRL's `DPOTrainer`.

Pairs come from the rankings of an oasst export (the better-ranked reply is ``chosen``; ``pairing=all``
takes every pair of a ranked group, ``best`` the best reply against each other one), from DPO records
(`oasst data convert --kind dpo`), or from a preference JSONL of ``{"prompt", "chosen", "rejected"}``
where each may be a plain string (the format chat feedback is exported in) or a list of messages.

The reference model is a frozen copy of the starting policy (TRL's default). The saved directory is a
plain causal LM with the chat template, usable wherever the SFT model is. Its model card records the
held-out log-probability margin ``log p(chosen) - log p(rejected)`` of the policy before and after
training, beside TRL's reward accuracies.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from oasst.training.datasets import Record
from oasst.training.rm import load_split

__all__ = ["CONFIG", "DpoConfig", "completion_logprob", "preference_margins", "run"]


@dataclass
class DpoConfig:
    """How to train with DPO. Every field can be set in YAML or as ``key=value``."""

    model: str = field(default="models/sft", metadata={"help": "Starting policy (the SFT model directory)."})
    data: list[str] = field(
        default_factory=list,
        metadata={"help": "oasst exports, DPO records, or prompt/chosen/rejected preference JSONL files."},
    )
    eval_data: str | None = field(
        default=None, metadata={"help": "Held-out pairs; default: val_fraction of data's trees."}
    )
    output_dir: str = field(default="models/dpo", metadata={"help": "Where the trained policy is written."})
    langs: list[str] | None = field(
        default=None,
        metadata={"help": "Keep pairs whose prompt is in these languages (e.g. [en, de]); null: all."},
    )
    pairing: str = field(
        default="all", metadata={"help": "Pairs from an export's rankings: all (K(K-1)/2) or best (K-1)."}
    )
    val_fraction: float = field(default=0.1, metadata={"help": "Share of trees held out (no eval_data)."})
    beta: float = field(default=0.1, metadata={"help": "Strength of the pull towards the reference model."})
    loss_type: list[str] = field(
        default_factory=lambda: ["sigmoid"],
        metadata={"help": "TRL DPO loss(es): sigmoid (DPO), ipo, hinge, robust, ... (a list is summed)."},
    )
    max_length: int = field(default=512, metadata={"help": "Tokens per prompt+reply (longer: end cut)."})
    learning_rate: float = field(default=1e-6, metadata={"help": "Peak learning rate (AdamW)."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "transformers scheduler name."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    epochs: float = field(default=1.0, metadata={"help": "Passes over the training pairs."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (-1: use epochs)."})
    batch_size: int = field(default=4, metadata={"help": "Pairs per device batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    logging_steps: int = field(default=10, metadata={"help": "Log every this many steps."})
    bf16: bool = field(default=True, metadata={"help": "bfloat16 mixed precision (TRL's default)."})
    report_to: list[str] = field(
        default_factory=list, metadata={"help": "Trackers (tensorboard, wandb, ...); empty: none."}
    )
    seed: int = field(default=0, metadata={"help": "Seed for the split and the data order."})

    def __post_init__(self) -> None:
        if isinstance(self.data, str):
            self.data = [self.data]
        if isinstance(self.langs, str):
            self.langs = [self.langs]
        if isinstance(self.loss_type, str):
            self.loss_type = [x.strip() for x in self.loss_type.split(",") if x.strip()]
        if self.pairing not in ("all", "best"):
            raise ValueError(f"pairing must be all or best, not {self.pairing!r}")
        if self.beta <= 0:
            raise ValueError("beta must be positive")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("val_fraction must be at least 0 and less than 1")


CONFIG = DpoConfig


def completion_logprob(model: Any, tokenizer: Any, prompt: Sequence[Any], completion: Sequence[Any]) -> float:
    """Sum of the log-probabilities the model gives the completion's tokens after the prompt."""
    import torch

    prompt_ids = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template([*prompt, *completion], tokenize=False)
    if not full.startswith(prompt_ids):
        raise ValueError("the chat template renders the prompt differently inside the conversation")
    head = tokenizer(prompt_ids, add_special_tokens=False)["input_ids"]
    tail = tokenizer(full[len(prompt_ids) :], add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[*head, *tail]], device=next(model.parameters()).device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    targets = ids[0, 1:]
    picked = logprobs.gather(-1, targets[:, None])[:, 0]
    return float(picked[len(head) - 1 :].sum())


def preference_margins(model: Any, tokenizer: Any, pairs: Sequence[Record]) -> list[float]:
    """``log p(chosen | prompt) - log p(rejected | prompt)`` under the model, per pair."""
    was_training = model.training
    model.eval()
    margins = [
        completion_logprob(model, tokenizer, p["prompt"], p["chosen"])
        - completion_logprob(model, tokenizer, p["prompt"], p["rejected"])
        for p in pairs
    ]
    model.train(was_training)
    return margins


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def run(cfg: DpoConfig) -> Path:
    """Train the policy with DPO on ``cfg.data``; write it with its tokenizer and a model card."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from oasst.training.callbacks import use_rich_progress
    from oasst.training.common import set_seed_and_threads, write_model_card
    from oasst.training.tokenizer import apply_prompt_format

    if not Path(cfg.model, "config.json").is_file():
        raise FileNotFoundError(f"no model in {cfg.model} (config.json is missing); set model=DIR")
    train_pairs, val_pairs = load_split(
        cfg.data,
        cfg.eval_data,
        "dpo",
        langs=cfg.langs or (),
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        pairing="best" if cfg.pairing == "best" else "all",
    )
    if not train_pairs:
        raise ValueError(
            f"no preference pairs to train on in {', '.join(cfg.data)}"
            + (f" for languages {', '.join(cfg.langs)}" if cfg.langs else "")
        )
    set_seed_and_threads(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    model = AutoModelForCausalLM.from_pretrained(cfg.model)
    apply_prompt_format(tokenizer, model)

    def as_dataset(pairs: list[Record]) -> Any:
        return Dataset.from_list(
            [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs]
        )

    args = DPOConfig(
        output_dir=cfg.output_dir,
        beta=cfg.beta,
        loss_type=cfg.loss_type,
        max_length=cfg.max_length,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to=cfg.report_to,
        seed=cfg.seed,
        bf16=cfg.bf16,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=None,  # a frozen copy of the starting policy
        args=args,
        train_dataset=as_dataset(train_pairs),
        eval_dataset=as_dataset(val_pairs) if val_pairs else None,
        processing_class=tokenizer,
    )
    use_rich_progress(trainer, "DPO")
    metrics: dict[str, Any] = {}
    if val_pairs:
        metrics["initial_eval_logp_margin"] = round(_mean(preference_margins(model, tokenizer, val_pairs)), 4)
    started = time.monotonic()
    result = trainer.train()
    metrics.update(
        train_loss=round(result.training_loss, 4),
        train_seconds=round(time.monotonic() - started, 1),
        steps=result.global_step,
    )
    if val_pairs:
        logged = trainer.evaluate()
        for key in ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins"):
            if key in logged:
                metrics[key] = round(float(logged[key]), 4)
        margins = preference_margins(trainer.model, tokenizer, val_pairs)
        metrics["eval_logp_margin"] = round(_mean(margins), 4)
        metrics["eval_logp_accuracy"] = round(sum(m > 0 for m in margins) / len(margins), 4)

    out = Path(cfg.output_dir)
    trainer.save_model(str(out))
    tokenizer.save_pretrained(out)
    write_model_card(
        out,
        kind="dpo",
        base_model=cfg.model,
        data={"sources": cfg.data, "train_pairs": len(train_pairs), "eval_pairs": len(val_pairs)},
        config=asdict(cfg),
        metrics=metrics,
    )
    return out
