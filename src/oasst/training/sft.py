"""``oasst train sft``: supervised fine-tuning on conversation threads, assistant tokens only.

The conversations come from oasst exports (threads extracted by `oasst.training.datasets`) or from
prepared SFT records (what ``oasst data convert`` / ``oasst data mix`` write), split into train and
validation by tree. The base model's tokenizer gets the oasst prompt format as its chat template
(`oasst.training.tokenizer.apply_prompt_format`, so any Hugging Face causal LM works), and TRL's
``SFTTrainer`` trains on it with ``assistant_only_loss``: the template's ``{% generation %}`` markers make
every assistant reply (with its end-of-sequence token) the only tokens that carry loss.

Options:

* ``packing``: several conversations share one row (best-fit decreasing); ``position_ids`` restart at
  every conversation and the attention is block-diagonal, so no conversation sees another. With
  FlashAttention TRL flattens the batch into one sequence and the kernel uses the sequence boundaries; with
  sdpa/eager the rows stay ``[batch, max_length]`` (`oasst.training.collators.PackedRowsCollator`) and each
  row gets a block-diagonal mask from its position ids.
* ``lora``: LoRA adapters (peft) instead of full fine-tuning; by default merged into the base weights when
  saving, so the output is a plain model directory. Rows of tokens that the prompt format added to the
  vocabulary are trained too.

Runs unchanged under ``accelerate launch`` (DDP, DeepSpeed, FSDP): the Trainer places the model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oasst.training.mixing import MixResult

_LORA_TARGETS_ALL = "all-linear"
# what a saved model directory holds (weights, adapters, the card); an existing one is not silently mixed in
_MODEL_FILES = (
    "config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "adapter_config.json",
    "oasst_training.json",
)


@dataclass
class SftConfig:
    """Settings of ``oasst train sft``; every field can be set in YAML or as ``key=value``."""

    model: str = field(
        default="models/tiny",
        metadata={"help": "Base model: a Hugging Face model directory (or hub id when online)."},
    )
    data: list[str] = field(
        default_factory=list,
        metadata={"help": "oasst exports (.jsonl[.gz] of trees or messages) or SFT record files (JSONL)."},
    )
    mix: str | None = field(
        default=None,
        metadata={"help": "A dataset mix YAML (see `oasst data mix`), used instead of or beside `data`."},
    )
    output_dir: str = field(default="models/sft", metadata={"help": "Where the model directory is written."})
    langs: list[str] | None = field(
        default=None, metadata={"help": "Keep conversations in these languages (e.g. [en, de]); null: all."}
    )
    top_k: int | None = field(
        default=None, metadata={"help": "Exports: only threads through replies ranked among the k best."}
    )
    best_path: bool = field(
        default=False, metadata={"help": "Exports: one thread per tree, following the best-ranked replies."}
    )
    val_fraction: float = field(
        default=0.05, metadata={"help": "Share of trees held out for validation (0: no evaluation)."}
    )
    max_length: int = field(
        default=1024,
        metadata={"help": "Tokens per example (longer ones are cut); the row length when packing."},
    )
    assistant_only_loss: bool = field(
        default=True, metadata={"help": "Train on assistant replies only (false: on every token)."}
    )
    packing: bool = field(
        default=False, metadata={"help": "Pack several conversations per row, isolated from each other."}
    )
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "linear, cosine, constant, ..."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Passes over the training data."})
    max_steps: int = field(
        default=-1, metadata={"help": "Stop after this many optimizer steps (-1: epochs)."}
    )
    per_device_train_batch_size: int = field(
        default=4, metadata={"help": "Examples (or packed rows) per device."}
    )
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "Evaluation batch size per device."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimizer step."}
    )
    warmup_ratio: float = field(default=0.03, metadata={"help": "Share of steps spent warming up the LR."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling (alpha / r multiplies the update)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] | str = field(
        default=_LORA_TARGETS_ALL,
        metadata={"help": "Modules that get adapters: all-linear, or names such as [q_proj, v_proj]."},
    )
    merge_lora: bool = field(
        default=True,
        metadata={"help": "Merge the adapters into the weights when saving (a plain model dir)."},
    )
    seed: int = field(
        default=0, metadata={"help": "Seed of the split, the shuffling and the initialisation."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log the loss every this many steps."})
    eval_steps: int | None = field(
        default=None, metadata={"help": "Also evaluate every this many steps (always once at the end)."}
    )
    save_steps: int | None = field(
        default=None, metadata={"help": "Write a resumable checkpoint every this many steps (null: none)."}
    )
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; null: on where the GPU supports it."}
    )
    dtype: str = field(
        default="float32", metadata={"help": "dtype the base weights are loaded in: float32, bfloat16, auto."}
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in the backward pass (less memory)."}
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "sdpa, eager, flash_attention_2, ...; null: the model's default."}
    )
    report_to: list[str] | None = field(
        default=None, metadata={"help": "Loggers (tensorboard, wandb, none); null: tensorboard if installed."}
    )
    overwrite: bool = field(
        default=False, metadata={"help": "Replace a model already in output_dir (else that is an error)."}
    )

    def __post_init__(self) -> None:
        if isinstance(self.data, str):
            self.data = [self.data]
        if isinstance(self.langs, str):
            self.langs = [self.langs]
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be at least 0 and below 1, not {self.val_fraction}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, not {self.top_k}")
        for name in ("max_length", "per_device_train_batch_size", "gradient_accumulation_steps", "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError("max_steps must be positive, or -1 to train for num_train_epochs")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be at least 0 and below 1, not {self.warmup_ratio}")
        if self.dtype not in ("float32", "bfloat16", "float16", "auto"):
            raise ValueError(f"dtype must be float32, bfloat16, float16 or auto, not {self.dtype!r}")


CONFIG = SftConfig


# --- data ------------------------------------------------------------------------------------------


def load_data(cfg: SftConfig) -> MixResult:
    """The training and validation conversations of ``cfg.data`` and ``cfg.mix``, split by tree."""
    from oasst.data import OasstDataError
    from oasst.training.mixing import DatasetSpec, MixConfig, MixError, build_mix, load_mix_config

    if not cfg.data and not cfg.mix:
        raise ValueError(
            "set data=[FILE, ...] (oasst exports or SFT records) or mix=FILE.yaml (a dataset mix)"
        )
    specs: list[DatasetSpec] = []
    for index, name in enumerate(cfg.data):
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"data file not found: {path}")
        fmt = _source_format(path)
        options: dict[str, Any] = {}
        if fmt == "oasst":
            options = {"langs": cfg.langs, "top_k": cfg.top_k, "best_path": cfg.best_path}
        specs.append(DatasetSpec(path=str(path), format=fmt, name=f"{index}:{path.name}", **options))
    try:
        if cfg.mix:
            mix = load_mix_config(cfg.mix)
            if mix.kind != "sft":
                raise ValueError(f"{cfg.mix} is a mix of {mix.kind} records; SFT needs kind: sft")
            specs.extend(mix.datasets)
        config = MixConfig(kind="sft", seed=cfg.seed, val_fraction=cfg.val_fraction, datasets=specs)
        result = build_mix(config)
    except (MixError, OasstDataError) as exc:
        raise ValueError(str(exc)) from exc
    if cfg.langs is not None:  # records carry their language; exports were filtered while extracting
        langs = set(cfg.langs)
        result.train = [r for r in result.train if r.get("lang") in langs]
        result.validation = [r for r in result.validation if r.get("lang") in langs]
    if not result.train:
        raise ValueError("no training conversations left: check the data files and the langs/top_k filters")
    return result


def _source_format(path: Path) -> str:
    """``records`` for SFT record files, ``oasst`` for exports (trees or messages), by their first line."""
    from oasst.data import open_jsonl

    try:
        with open_jsonl(path) as stream:
            first = next((line for line in stream if line.strip()), None)
        row = json.loads(first) if first is not None else None
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a JSONL file ({exc})") from exc
    if not isinstance(row, dict):
        raise ValueError(f"{path}: empty, or its first line is not a JSON object")
    if "messages" in row:
        return "records"
    if "message_id" in row or "message_tree_id" in row:
        return "oasst"
    raise ValueError(
        f"{path}: neither an oasst export nor SFT records (a 'messages' list); "
        "convert other formats with `oasst data convert --from ...`"
    )


# --- model and trainer -----------------------------------------------------------------------------


def load_model_and_tokenizer(cfg: SftConfig) -> tuple[Any, Any, list[int]]:
    """The base model and tokenizer with the oasst prompt format; also the ids of tokens it added."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from oasst.training.tokenizer import apply_prompt_format

    source = Path(cfg.model)
    if (source.is_absolute() or cfg.model.startswith(".")) and not source.is_dir():
        raise FileNotFoundError(f"base model directory not found: {source}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg.model)
        dtype: Any = cfg.dtype if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
        kwargs: dict[str, Any] = {"dtype": dtype}
        if cfg.attn_implementation:
            kwargs["attn_implementation"] = cfg.attn_implementation
        model = AutoModelForCausalLM.from_pretrained(cfg.model, **kwargs)
    except OSError as exc:
        raise FileNotFoundError(f"cannot load the base model {cfg.model!r}: {exc}") from exc
    vocab_before = len(tokenizer)
    apply_prompt_format(tokenizer, model)
    return model, tokenizer, list(range(vocab_before, len(tokenizer)))


def training_arguments(cfg: SftConfig, *, has_eval: bool) -> Any:
    """TRL's ``SFTConfig`` for these settings (devices and precision left to the Trainer/accelerate)."""
    import dataclasses
    import importlib.util

    import torch
    from trl import SFTConfig

    cuda = torch.cuda.is_available()
    bf16 = cfg.bf16 if cfg.bf16 is not None else cuda and torch.cuda.is_bf16_supported()
    report_to = cfg.report_to
    if report_to is None:
        report_to = ["tensorboard"] if importlib.util.find_spec("tensorboard") else ["none"]
    eval_strategy = "steps" if has_eval and cfg.eval_steps else "no"
    # transformers 5.2x renamed gradient_checkpointing (now a deprecated alias) to activation_checkpointing
    names = {f.name for f in dataclasses.fields(SFTConfig)}
    checkpointing = (
        "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    )
    checkpointing_flag: dict[str, Any] = {checkpointing: cfg.gradient_checkpointing}
    return SFTConfig(
        **checkpointing_flag,
        output_dir=cfg.output_dir,
        use_cpu=not cuda and not torch.backends.mps.is_available(),
        bf16=bf16,
        seed=cfg.seed,
        data_seed=cfg.seed,
        max_length=cfg.max_length,
        assistant_only_loss=cfg.assistant_only_loss,
        packing=cfg.packing,
        packing_strategy="bfd",
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a share of the total steps
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        eval_strategy=eval_strategy,
        eval_steps=cfg.eval_steps if eval_strategy == "steps" else None,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,
        report_to=report_to,
        disable_tqdm=False,
    )


def lora_config(cfg: SftConfig, new_token_ids: list[int]) -> Any:
    """LoRA on ``lora_target_modules``; embedding rows of tokens the prompt format added train as well."""
    from peft import LoraConfig

    targets = cfg.lora_target_modules
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        task_type="CAUSAL_LM",
        trainable_token_indices=list(new_token_ids) or None,
    )


def build_trainer(
    cfg: SftConfig,
    model: Any,
    tokenizer: Any,
    train: list[dict[str, Any]],
    validation: list[dict[str, Any]],
    new_token_ids: list[int] | None = None,
) -> Any:
    """TRL's ``SFTTrainer`` on the conversations (records with a ``messages`` list)."""
    from datasets import Dataset
    from trl import SFTTrainer

    from oasst.training.callbacks import use_rich_progress
    from oasst.training.collators import PackedRowsCollator, uses_flash_attention

    def conversations(records: list[dict[str, Any]]) -> Any:
        return Dataset.from_list([{"messages": r["messages"]} for r in records])

    eval_dataset = conversations(validation) if validation else None
    trainer = SFTTrainer(
        model=model,
        args=training_arguments(cfg, has_eval=eval_dataset is not None),
        train_dataset=conversations(train),
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=lora_config(cfg, new_token_ids or []) if cfg.lora else None,
    )
    if cfg.packing and not uses_flash_attention(model):
        # TRL flattens a packed batch into one sequence, which only FlashAttention's varlen kernels handle
        # cheaply; sdpa/eager would get one mask over the whole batch. Keep the rows apart instead. (TRL
        # refuses a collator of ours with packing, so it is swapped in; its dataloaders are built later.)
        trainer.data_collator = PackedRowsCollator(pad_token_id=tokenizer.pad_token_id)  # set by TRL
    use_rich_progress(trainer, "SFT")
    return trainer


# --- run -------------------------------------------------------------------------------------------


def run(cfg: SftConfig) -> Path:
    """Train, then write the model, its tokenizer (with the chat template) and a model card."""
    from oasst.training.common import set_seed_and_threads

    out = Path(cfg.output_dir)
    if not cfg.overwrite and out.is_dir() and any(any(out.glob(name)) for name in _MODEL_FILES):
        raise ValueError(f"{out} already holds a model: choose another output_dir, or set overwrite=true")
    data = load_data(cfg)
    set_seed_and_threads(cfg.seed)
    model, tokenizer, new_token_ids = load_model_and_tokenizer(cfg)
    trainer = build_trainer(cfg, model, tokenizer, data.train, data.validation, new_token_ids)
    if cfg.lora and cfg.merge_lora and _sharded(trainer):
        raise ValueError(
            "merge_lora needs the whole model in one process, which ZeRO-3 and FSDP do not give: set "
            "merge_lora=false and merge the saved adapter afterwards (peft's merge_and_unload)"
        )
    result = trainer.train(resume_from_checkpoint=_last_checkpoint(cfg) if cfg.save_steps else None)
    metrics = _train_metrics(trainer, result)
    if trainer.eval_dataset is not None:
        metrics["eval_loss"] = round(float(trainer.evaluate()["eval_loss"]), 4)
    save(trainer, tokenizer, cfg, out)
    if trainer.is_world_process_zero():
        from oasst.training.common import write_model_card

        write_model_card(
            out,
            kind="sft",
            base_model=cfg.model,
            data={
                "train_conversations": len(data.train),
                "validation_conversations": len(data.validation),
                **{
                    f"dataset {d.name}": f"{d.train} train / {d.validation} validation" for d in data.datasets
                },
            },
            config=asdict(cfg),
            metrics=metrics,
        )
    return out


def save(trainer: Any, tokenizer: Any, cfg: SftConfig, out: Path) -> None:
    """A plain model directory: LoRA merged (unless ``merge_lora`` is off), the tokenizer with its template."""
    if trainer.is_world_process_zero():  # weights of an earlier run would be loaded beside the new ones
        for name in _MODEL_FILES:
            for stale in out.glob(name):
                stale.unlink()
    if cfg.lora and cfg.merge_lora:
        model = trainer.accelerator.unwrap_model(trainer.model)
        merged = model.merge_and_unload()
        if trainer.is_world_process_zero():
            merged.save_pretrained(out)
    else:
        trainer.save_model(str(out))  # gathers sharded (ZeRO-3/FSDP) weights; an adapter dir with LoRA
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(out)


def _sharded(trainer: Any) -> bool:
    """Whether the weights are split across processes (DeepSpeed ZeRO-3 or FSDP)."""
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    return bool(trainer.is_fsdp_enabled or (plugin is not None and plugin.zero_stage == 3))


def _train_metrics(trainer: Any, result: Any) -> dict[str, Any]:
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    model = trainer.accelerator.unwrap_model(trainer.model)
    metrics: dict[str, Any] = {
        "train_loss": round(float(result.training_loss), 4),
        "steps": trainer.state.global_step,
        "epochs": round(float(trainer.state.epoch or 0.0), 3),
        "train_runtime_s": round(float(result.metrics.get("train_runtime", 0.0)), 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    if losses:
        metrics["loss_first_logged"] = round(float(losses[0]), 4)
        metrics["loss_last_logged"] = round(float(losses[-1]), 4)
    return metrics


def _last_checkpoint(cfg: SftConfig) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(cfg.output_dir)
    return get_last_checkpoint(str(out)) if out.is_dir() else None
