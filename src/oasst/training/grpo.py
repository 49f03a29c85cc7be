"""``oasst train grpo``: GRPO or RLOO (TRL) against the same reward model and prompts as PPO.

Both sample ``num_generations`` replies per prompt and use the group itself as the baseline, so they need
no value head: GRPO normalises each reward by its group's mean (and standard deviation), RLOO subtracts
the mean of the *other* replies (leave-one-out). The KL to the frozen reference is weighted by ``beta``
(0 drops the reference model entirely, as TRL now recommends). The reward model is any one-label
``AutoModelForSequenceClassification`` directory; TRL renders each prompt + reply with the reward model's
own chat template and reads the score at the last token, as ``oasst train rm`` trained it.

This module only maps settings onto TRL's ``GRPOTrainer`` / ``RLOOTrainer``, so it runs unchanged under
``accelerate launch`` (DDP, DeepSpeed, FSDP) and logs to TensorBoard under ``output_dir/runs``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ALGORITHMS = ("grpo", "rloo")


@dataclass
class GrpoConfig:
    """Settings of ``oasst train grpo``; every field can be set in YAML or as ``key=value``."""

    algorithm: str = field(default="grpo", metadata={"help": "grpo or rloo."})
    model: str = field(default="", metadata={"help": "The policy to start from: an SFT model directory."})
    reward_model: str = field(default="", metadata={"help": "Reward model directory (oasst train rm)."})
    data: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Prompt files: oasst exports (.jsonl[.gz] trees) or RL records (oasst data convert)."
        },
    )
    langs: list[str] | None = field(
        default=None, metadata={"help": "Exports only: languages of the prompts to keep (default all)."}
    )
    output_dir: str = field(default="models/grpo", metadata={"help": "Where the trained policy is written."})
    seed: int = field(default=0, metadata={"help": "Random seed."})
    max_steps: int = field(default=200, metadata={"help": "Optimiser steps."})
    per_device_train_batch_size: int = field(
        default=8, metadata={"help": "Replies per device per step (a multiple of num_generations overall)."}
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimiser step."})
    num_generations: int = field(default=4, metadata={"help": "Replies sampled per prompt (the group)."})
    max_prompt_length: int = field(default=256, metadata={"help": "Prompt tokens kept (oldest cut first)."})
    max_completion_length: int = field(default=128, metadata={"help": "Longest reply sampled."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling cut (1: none)."})
    learning_rate: float = field(default=1e-6, metadata={"help": "AdamW learning rate."})
    beta: float = field(
        default=0.04, metadata={"help": "Weight of the KL to the reference (0: no reference)."}
    )
    num_iterations: int = field(default=1, metadata={"help": "Updates per generated batch (μ)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    logging_steps: int = field(default=1, metadata={"help": "Log every N steps."})
    save_steps: int = field(default=0, metadata={"help": "Checkpoint every N steps (0: only at the end)."})
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 weights/autocast; null: on GPUs that have it."}
    )
    report_to: list[str] | None = field(
        default=None, metadata={"help": "Trainer loggers; null: tensorboard when installed."}
    )

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, not {self.algorithm!r}")
        if self.num_generations < 2:
            raise ValueError("num_generations must be at least 2: the group is the baseline")


CONFIG = GrpoConfig


def trainer_args(cfg: GrpoConfig) -> Any:
    """TRL's ``GRPOConfig`` or ``RLOOConfig`` for these settings (devices left to the Trainer/accelerate)."""
    import torch
    from trl import GRPOConfig, RLOOConfig

    cuda = torch.cuda.is_available()
    report_to = cfg.report_to
    if report_to is None:
        report_to = ["tensorboard"] if importlib.util.find_spec("tensorboard") else ["none"]
    config_cls = GRPOConfig if cfg.algorithm == "grpo" else RLOOConfig
    return config_cls(
        output_dir=cfg.output_dir,
        use_cpu=not cuda and not torch.backends.mps.is_available(),
        bf16=cfg.bf16 if cfg.bf16 is not None else cuda and torch.cuda.is_bf16_supported(),
        seed=cfg.seed,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        learning_rate=cfg.learning_rate,
        beta=cfg.beta,
        num_iterations=cfg.num_iterations,
        max_grad_norm=cfg.max_grad_norm,
        logging_steps=cfg.logging_steps,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,
        report_to=report_to,
    )


def _truncated(tokenizer: Any, prompt: list[dict[str, str]], max_length: int) -> list[dict[str, str]]:
    """Drop the oldest turns until the rendered prompt fits (TRL no longer truncates prompts)."""
    while len(prompt) > 1:
        text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= max_length:
            break
        prompt = prompt[1:]
    return prompt


def run(cfg: GrpoConfig) -> Path:
    """Train the policy in ``cfg.model`` against ``cfg.reward_model``; save it to ``cfg.output_dir``."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl import GRPOTrainer, RLOOTrainer

    from oasst.training.callbacks import use_rich_progress
    from oasst.training.common import set_seed_and_threads, write_model_card
    from oasst.training.evaluate import load_prompts
    from oasst.training.tokenizer import apply_prompt_format

    for name, where in (("model", cfg.model), ("reward_model", cfg.reward_model)):
        if not where or not (Path(where) / "config.json").is_file():
            raise FileNotFoundError(f"{name}: no model directory at {where or '(not set)'}")
    if not cfg.data:
        raise ValueError("set data=[FILE, ...]: oasst exports or RL prompt records")
    prompts = [p for path in cfg.data for p in load_prompts(path, langs=cfg.langs or ())]
    set_seed_and_threads(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    policy = AutoModelForCausalLM.from_pretrained(cfg.model)
    apply_prompt_format(tokenizer, policy)
    rm_tokenizer = AutoTokenizer.from_pretrained(cfg.reward_model)
    reward_model = AutoModelForSequenceClassification.from_pretrained(cfg.reward_model, num_labels=1)
    if reward_model.config.pad_token_id is None:
        reward_model.config.pad_token_id = rm_tokenizer.pad_token_id
    dataset = Dataset.from_list(
        [{"prompt": _truncated(tokenizer, p, cfg.max_prompt_length)} for p in prompts]
    )
    trainer_cls = GRPOTrainer if cfg.algorithm == "grpo" else RLOOTrainer
    trainer = trainer_cls(
        model=policy,
        reward_funcs=[reward_model],
        reward_processing_classes=[rm_tokenizer],
        args=trainer_args(cfg),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    use_rich_progress(trainer, cfg.algorithm.upper())
    result = trainer.train()
    out = Path(cfg.output_dir)
    trainer.save_model(str(out))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(out)
        write_model_card(
            out,
            kind=cfg.algorithm,
            base_model=cfg.model,
            data={
                "prompts": len(prompts),
                "prompt_files": ", ".join(cfg.data),
                "reward_model": cfg.reward_model,
            },
            config=asdict(cfg),
            metrics=_metrics(trainer.state.log_history, result),
        )
    return out


def _metrics(log_history: list[dict[str, Any]], result: Any) -> dict[str, Any]:
    """The reward at the start and end of the run (first and last tenth of the logs) and the final KL."""
    logs = [row for row in log_history if "reward" in row]
    metrics: dict[str, Any] = {
        "steps": result.global_step,
        "train_runtime_s": round(result.metrics["train_runtime"], 1),
    }
    if logs:
        span = max(1, len(logs) // 10)
        metrics["reward_first"] = round(sum(r["reward"] for r in logs[:span]) / span, 4)
        metrics["reward_last"] = round(sum(r["reward"] for r in logs[-span:]) / span, 4)
        if "kl" in logs[-1]:
            metrics["kl_last"] = round(float(logs[-1]["kl"]), 4)
    return metrics
