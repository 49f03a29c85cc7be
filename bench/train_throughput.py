"""Training throughput: oasst's SFT trainer against a plain TRL ``SFTTrainer`` (and a plain Hugging Face
``Trainer``) on the same model, data and settings, in the same process; then PPO rollouts per second.

    OMP_NUM_THREADS=1 python bench/train_throughput.py          # CPU: bootstraps a tiny model first
    python bench/train_throughput.py                            # on a GPU: a small model, bf16, bigger batches
    python bench/train_throughput.py --model models/sft --data export.jsonl.gz --steps 50

SFT variants, each trained for ``--steps`` optimizer steps with identical settings (batch size, max_length,
learning rate and schedule, seed, precision, device, assistant-only loss, no logging integrations):

* ``oasst`` and ``oasst-packed``: oasst's own path, ``oasst.training.sft.build_trainer`` (the trainer that
  ``oasst train sft`` runs) and ``trainer.train()``, without and with ``packing``. Without FlashAttention
  (on CPU, or sdpa/eager on a GPU) oasst's packing keeps the packed rows as ``[batch, max_length]`` with
  restarting positions and no attention mask (`oasst.training.collators.PackedRowsCollator`);
* ``trl`` (the baseline) and ``trl-packed``: ``trl.SFTTrainer`` configured here, directly;
* ``hf``: ``transformers.Trainer`` on conversations tokenized here (chat template, assistant mask) with a
  padding collator.
* ``oasst-flat`` (a comparison, oasst's path before the rows layout, and what it still does with
  FlashAttention): oasst's packed trainer with TRL's padding-free collator, which flattens the whole batch
  into one sequence; without FlashAttention transformers gives sdpa/eager a block-diagonal mask over all
  of it, (batch × max_length)² of attention, where the rows layout has batch × max_length². The same
  tokens and labels (the final loss matches ``oasst-packed``).

Tokens/s counts the tokens that are not padding (the tokens of the examples each batch is collated from)
over the steps after ``--warmup`` (model loading, dataset preparation and the first steps are not timed). Variants run in rounds (``--repeats``), in alternating order, and each
shows its best round. The verdict checks oasst within 5 % of the baseline and the gain of packing.

PPO: ``oasst.training.ppo.run`` for ``--ppo-steps`` steps against a hand-set reward model
(`oasst.training.rewards.token_share_reward_model`); rollouts/s is replies per second of whole PPO steps
(generation, scoring, and the PPO epochs), after the first step.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SAMPLE = Path("/work/shared/data/oasst2_sample.trees.jsonl")
VARIANTS = ("oasst", "oasst-packed", "oasst-flat", "trl", "trl-packed", "hf")
BASELINE = "trl"
TOLERANCE = 0.05


@dataclass
class Settings:
    """What every SFT variant shares."""

    model: str
    steps: int
    warmup: int
    batch_size: int
    max_length: int
    learning_rate: float
    warmup_ratio: float
    seed: int
    bf16: bool
    cuda: bool
    work: Path


@dataclass
class Timing:
    variant: str
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    loss: float = float("nan")
    runs: list[float] = field(default_factory=list)  # tokens/s of each repeat

    @property
    def tokens_per_s(self) -> float:
        """The best round: other load on the machine only ever slows a round down."""
        return max(self.runs) if self.runs else 0.0


# --- measuring a Trainer -----------------------------------------------------------------------------


def counting_tokens(
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
) -> Callable[..., dict[str, Any]]:
    """``collate`` that also returns ``real_tokens``: the tokens of its examples, i.e. the batch less padding
    (packed rows carry no attention mask to count them by)."""

    def collate_and_count(examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collate(examples)
        batch["real_tokens"] = sum(len(e["input_ids"]) for e in examples)
        return batch

    return collate_and_count


def measure(trainer: Any, settings: Settings) -> tuple[int, float, float]:
    """Train; (tokens, seconds) of the steps after the warm-up ones, and the final training loss."""
    import torch
    from transformers import TrainerCallback

    counts: list[Any] = []
    marks: dict[int, float] = {}
    original = trainer.training_step

    def training_step(model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        counts.append(inputs.pop("real_tokens"))
        return original(model, inputs, *args, **kwargs)

    class Clock(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step in (settings.warmup, state.max_steps):
                if settings.cuda:
                    torch.cuda.synchronize()
                marks[state.global_step] = time.perf_counter()

    trainer.training_step = training_step
    trainer.data_collator = counting_tokens(trainer.data_collator)  # the dataloader is built in train()
    trainer.add_callback(Clock())
    result = trainer.train()
    steps = trainer.state.global_step
    if len(counts) != steps:
        raise RuntimeError(
            f"{len(counts)} micro-batches for {steps} steps: use gradient_accumulation_steps=1"
        )
    tokens = int(sum(int(c) for c in counts[settings.warmup : steps]))
    return tokens, marks[steps] - marks[settings.warmup], float(result.training_loss)


# --- the variants ------------------------------------------------------------------------------------


def oasst_trainer(settings: Settings, records: list[dict[str, Any]], *, packing: bool) -> Any:
    from oasst.training import sft

    cfg = sft.SftConfig(
        model=settings.model,
        output_dir=str(settings.work / ("oasst-packed" if packing else "oasst")),
        val_fraction=0.0,
        max_length=settings.max_length,
        packing=packing,
        learning_rate=settings.learning_rate,
        warmup_ratio=settings.warmup_ratio,
        max_steps=settings.steps,
        per_device_train_batch_size=settings.batch_size,
        seed=settings.seed,
        logging_steps=max(1, settings.steps // 5),
        bf16=settings.bf16,
        report_to=["none"],
    )
    model, tokenizer, new_ids = sft.load_model_and_tokenizer(cfg)
    return sft.build_trainer(cfg, model, tokenizer, records, [], new_ids)


def _model_and_tokenizer(settings: Settings) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from oasst.training.tokenizer import apply_prompt_format

    tokenizer = AutoTokenizer.from_pretrained(settings.model)
    model = AutoModelForCausalLM.from_pretrained(settings.model, dtype=torch.float32)
    apply_prompt_format(tokenizer, model)  # the same chat template ({% generation %} markers) as oasst
    return model, tokenizer


def _common_arguments(settings: Settings, name: str) -> dict[str, Any]:
    return {
        "output_dir": str(settings.work / name),
        "use_cpu": not settings.cuda,
        "bf16": settings.bf16,
        "seed": settings.seed,
        "data_seed": settings.seed,
        "learning_rate": settings.learning_rate,
        "lr_scheduler_type": "linear",
        "warmup_steps": settings.warmup_ratio,
        "max_steps": settings.steps,
        "per_device_train_batch_size": settings.batch_size,
        "gradient_accumulation_steps": 1,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "logging_steps": max(1, settings.steps // 5),
        "save_strategy": "no",
        "report_to": ["none"],
        "disable_tqdm": True,
    }


def trl_trainer(settings: Settings, records: list[dict[str, Any]], *, packing: bool) -> Any:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = _model_and_tokenizer(settings)
    args = SFTConfig(
        **_common_arguments(settings, "trl-packed" if packing else "trl"),
        max_length=settings.max_length,
        assistant_only_loss=True,
        packing=packing,
        packing_strategy="bfd",
    )
    data = Dataset.from_list([{"messages": r["messages"]} for r in records])
    return SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)


def hf_trainer(settings: Settings, records: list[dict[str, Any]]) -> Any:
    """``transformers.Trainer``: conversations tokenized with the chat template, loss on assistant tokens."""
    import torch
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    model, tokenizer = _model_and_tokenizer(settings)
    rows = []
    for record in records:
        encoded = tokenizer.apply_chat_template(
            record["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids = list(encoded["input_ids"])[: settings.max_length]
        keep = list(encoded["assistant_masks"])[: settings.max_length]
        rows.append({"input_ids": ids, "labels": [t if k else -100 for t, k in zip(ids, keep, strict=True)]})
    pad = tokenizer.pad_token_id

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        width = max(len(row["input_ids"]) for row in batch)
        ids = [row["input_ids"] + [pad] * (width - len(row["input_ids"])) for row in batch]
        labels = [row["labels"] + [-100] * (width - len(row["labels"])) for row in batch]
        mask = [[1] * len(row["input_ids"]) + [0] * (width - len(row["input_ids"])) for row in batch]
        return {
            "input_ids": torch.tensor(ids),
            "attention_mask": torch.tensor(mask),
            "labels": torch.tensor(labels),
        }

    args = TrainingArguments(**_common_arguments(settings, "hf"), remove_unused_columns=False)
    return Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows), data_collator=collate)


def run_variant(name: str, settings: Settings, records: list[dict[str, Any]]) -> tuple[int, float, float]:
    from oasst.training.common import set_seed_and_threads

    set_seed_and_threads(settings.seed)
    builders: dict[str, Callable[[], Any]] = {
        "oasst": lambda: oasst_trainer(settings, records, packing=False),
        "oasst-packed": lambda: oasst_trainer(settings, records, packing=True),
        "oasst-flat": lambda: _with_flat_collator(oasst_trainer(settings, records, packing=True)),
        "trl": lambda: trl_trainer(settings, records, packing=False),
        "trl-packed": lambda: trl_trainer(settings, records, packing=True),
        "hf": lambda: hf_trainer(settings, records),
    }
    trainer = builders[name]()
    try:
        return measure(trainer, settings)
    finally:
        del trainer
        _free_memory(settings.cuda)


def _with_flat_collator(trainer: Any) -> Any:
    """TRL's padding-free collator: the packed batch flattened into one sequence."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from oasst.training.collators import PackedRowsCollator

    if not isinstance(trainer.data_collator, PackedRowsCollator):
        raise RuntimeError("oasst-flat compares with the rows layout: run it without FlashAttention")
    pad = trainer.data_collator.pad_token_id
    trainer.data_collator = DataCollatorForLanguageModeling(pad_token_id=pad, padding_free=True)
    return trainer


def _free_memory(cuda: bool) -> None:
    import gc

    gc.collect()
    if cuda:
        import torch

        torch.cuda.empty_cache()


# --- PPO -------------------------------------------------------------------------------------------


@dataclass
class PpoTiming:
    steps: int
    replies: int
    tokens: int
    seconds: float
    rollout_seconds: float


def measure_ppo(model_dir: str, data: str, work: Path, args: argparse.Namespace, cuda: bool) -> PpoTiming:
    """``oasst.training.ppo.run``, timed per step by wrapping its rollout and update functions."""
    import torch
    from transformers import AutoTokenizer

    from oasst.training import ppo
    from oasst.training.rewards import token_share_reward_model

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    favoured = tokenizer(" the and of to a in is it you that", add_special_tokens=False)["input_ids"]
    reward_dir = token_share_reward_model(model_dir, favoured, work / "reward-model")

    starts: list[float] = []
    rollout_ends: list[float] = []
    ends: list[float] = []
    tokens: list[int] = []
    rollout, update = ppo.rollout, ppo.ppo_update

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def timed_rollout(*a: Any, **kw: Any) -> Any:
        sync()
        starts.append(time.perf_counter())
        batch = rollout(*a, **kw)
        tokens.append(int(batch.mask.sum()))
        rollout_ends.append(time.perf_counter())
        return batch

    def timed_update(*a: Any, **kw: Any) -> Any:
        stats = update(*a, **kw)
        sync()
        ends.append(time.perf_counter())
        return stats

    cfg = ppo.PPOConfig(
        model=model_dir,
        reward_model=str(reward_dir),
        data=[data],
        output_dir=str(work / "ppo"),
        steps=args.ppo_steps,
        batch_size=args.ppo_batch,
        mini_batch_size=max(1, args.ppo_batch // 2),
        ppo_epochs=2,
        max_prompt_length=min(256, args.max_length),
        max_new_tokens=args.ppo_new_tokens,
        learning_rate=1e-5,
        seed=args.seed,
    )
    ppo.rollout, ppo.ppo_update = timed_rollout, timed_update  # type: ignore[assignment]
    try:
        ppo.run(cfg)
    finally:
        ppo.rollout, ppo.ppo_update = rollout, update  # type: ignore[assignment]
    first = 1 if len(starts) > 1 else 0  # the first step warms up generation
    timed = range(first, len(starts))
    return PpoTiming(
        steps=len(timed),
        replies=len(timed) * cfg.batch_size,
        tokens=sum(tokens[i] for i in timed),
        seconds=ends[-1] - starts[first],
        rollout_seconds=sum(rollout_ends[i] - starts[i] for i in timed),
    )


# --- data and model ----------------------------------------------------------------------------------


def load_records(data: str, seed: int) -> list[dict[str, Any]]:
    """SFT records through oasst's own data path (exports are extracted, record files read)."""
    from oasst.training import sft

    return list(sft.load_data(sft.SftConfig(data=[data], val_fraction=0.0, seed=seed)).train)


def bootstrap_model(records: list[dict[str, Any]], size: str, max_length: int, out: Path) -> str:
    from oasst.training.bootstrap import BootstrapConfig, bootstrap

    texts = [m["content"] for r in records for m in r["messages"]]
    cfg = BootstrapConfig(output_dir=str(out), size=size, max_length=max(512, max_length), pretrain_steps=0)
    return str(bootstrap(texts, cfg))


# --- main ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None, cuda: bool) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="A Hugging Face causal LM directory (default: bootstrap one).")
    parser.add_argument("--size", choices=("tiny", "small"), default="small" if cuda else "tiny")
    parser.add_argument("--data", default=str(SAMPLE), help="oasst export or SFT records (JSONL).")
    parser.add_argument("--steps", type=int, default=50 if cuda else 10, help="Optimizer steps per variant.")
    parser.add_argument("--warmup", type=int, default=10 if cuda else 2, help="First steps not timed.")
    parser.add_argument("--batch-size", type=int, default=16 if cuda else 4)
    parser.add_argument("--max-length", type=int, default=1024 if cuda else 512)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    default_variants = VARIANTS if cuda else tuple(v for v in VARIANTS if v != "trl-packed")
    parser.add_argument(
        "--variants", default=",".join(default_variants), help=f"Comma list of {', '.join(VARIANTS)}."
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="Rounds over the variants (best tokens/s per variant)."
    )
    parser.add_argument("--ppo-steps", type=int, default=8 if cuda else 4, help="PPO steps (0: skip PPO).")
    parser.add_argument("--ppo-batch", type=int, default=32 if cuda else 8, help="Prompts per PPO step.")
    parser.add_argument("--ppo-new-tokens", type=int, default=128 if cuda else 32, help="Longest reply.")
    parser.add_argument("--fp32", action="store_true", help="No bf16 autocast on the GPU.")
    args = parser.parse_args(argv)
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    if args.steps <= args.warmup:
        parser.error("--steps must be larger than --warmup")
    return args


def device_line(cuda: bool, bf16: bool) -> str:
    import platform

    import torch
    import transformers
    import trl

    if cuda:
        where = f"{torch.cuda.get_device_name(0)}, {'bf16' if bf16 else 'fp32'}"
    else:
        where = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads), fp32"
    return (
        f"{where}; torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}"
    )


def main(argv: list[str] | None = None) -> int:
    import torch

    cuda = torch.cuda.is_available()
    args = parse_args(argv, cuda)
    if not cuda and os.environ.get("OMP_NUM_THREADS") is None:
        print("hint: OMP_NUM_THREADS=1 gives steadier CPU figures (torch uses one thread here anyway)")
    bf16 = cuda and not args.fp32 and torch.cuda.is_bf16_supported()
    variants = [v for v in VARIANTS if v in args.variants.split(",")]
    with tempfile.TemporaryDirectory(prefix="oasst-train-bench-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        records = load_records(args.data, args.seed)
        model_dir = args.model or bootstrap_model(records, args.size, args.max_length, work / "model")
        from transformers import AutoConfig

        params = AutoConfig.from_pretrained(model_dir)
        print(
            f"model {args.model or f'bootstrapped {args.size}'} ({params.num_hidden_layers} layers, hidden "
            f"{params.hidden_size}); {len(records)} conversations from {args.data}"
        )
        print(device_line(cuda, bf16))
        print(
            f"SFT: {args.steps} steps (first {args.warmup} not timed), batch {args.batch_size}, "
            f"max_length {args.max_length}, lr {args.lr}, seed {args.seed}, {args.repeats} round(s)\n"
        )
        settings = Settings(
            model=model_dir,
            steps=args.steps,
            warmup=args.warmup,
            batch_size=args.batch_size,
            max_length=args.max_length,
            learning_rate=args.lr,
            warmup_ratio=0.03,
            seed=args.seed,
            bf16=bf16,
            cuda=cuda,
            work=work,
        )
        timings = {name: Timing(name) for name in variants}
        for round_ in range(args.repeats):  # rounds in alternating order: drifting load hits all alike
            for name in variants if round_ % 2 == 0 else variants[::-1]:
                tokens, seconds, loss = run_variant(name, settings, records)
                t = timings[name]
                t.steps, t.tokens, t.seconds, t.loss = args.steps - args.warmup, tokens, seconds, loss
                t.runs.append(tokens / seconds)
                print(
                    f"  {name:<13} {tokens / seconds:>10.0f} tokens/s  ({tokens} tokens in {seconds:.2f} s)"
                )
        print_table(list(timings.values()))
        if args.ppo_steps:
            p = measure_ppo(model_dir, args.data, work, args, cuda)
            print(
                f"\nPPO ({args.ppo_batch} prompts/step, replies up to {args.ppo_new_tokens} tokens, 2 PPO epochs,"
                f" {p.steps} steps timed): {p.replies / p.seconds:.2f} rollouts/s, "
                f"{p.tokens / p.seconds:.0f} generated tokens/s, "
                f"{p.seconds / p.steps:.2f} s/step ({100 * p.rollout_seconds / p.seconds:.0f} % in rollout)"
            )
        print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


def print_table(timings: list[Timing]) -> None:
    by_name = {t.variant: t for t in timings}
    base = by_name.get(BASELINE)
    print(f"\n{'variant':<14}{'steps':>6}{'tokens/s':>12}{'vs trl':>9}{'final loss':>12}")
    for t in timings:
        rel = f"{100 * t.tokens_per_s / base.tokens_per_s:.1f}%" if base else "-"
        print(f"{t.variant:<14}{t.steps:>6}{t.tokens_per_s:>12.0f}{rel:>9}{t.loss:>12.3f}")
    verdicts = []
    oasst = by_name.get("oasst")
    if oasst and base:
        ratio = oasst.tokens_per_s / base.tokens_per_s
        ok = ratio >= 1 - TOLERANCE
        verdicts.append(f"oasst at {100 * ratio:.1f}% of plain TRL: {'within' if ok else 'NOT within'} 5%")
    for name in ("oasst-packed", "oasst-flat"):
        packed = by_name.get(name)
        if oasst and packed:
            gain = packed.tokens_per_s / oasst.tokens_per_s
            verdicts.append(f"{name} over oasst ×{gain:.2f} ({'gain' if gain > 1 else 'NO gain'})")
    if verdicts:
        print("verdict: " + "; ".join(verdicts))


if __name__ == "__main__":
    sys.exit(main())
