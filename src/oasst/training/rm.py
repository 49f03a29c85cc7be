"""``oasst train rm``: a reward model — one scalar per (conversation, reply) — trained on ranked replies.

Each training example is a *group*: a prompt and the K replies people ranked for it, best first
(``{"prompt": [messages], "replies": [text, ...]}``, see `oasst.training.datasets`). All K replies go
through the model in one batch, each rendered with the chat template after the prompt, and the score is
read at the reply's final eos token (the last non-pad token). The loss is the original Open Assistant's
K-wise ranking loss (InstructGPT's): every one of the group's C(K,2) pairs (i ranked above j) adds
``-log sigmoid(s_i - s_j)`` plus a small L2 penalty ``l2_coef * (s_i² + s_j²) / 2``; pairs are averaged
within a group and groups averaged over the batch, so every prompt weighs the same however many replies
it has. That is not what flattening groups into independent pairs gives (a 4-reply prompt would weigh
six times as much as a 2-reply one).

The model is ``AutoModelForSequenceClassification(num_labels=1)`` on top of the SFT (or bootstrap)
model; the saved directory loads with that class and carries the chat template. `RewardScorer` scores
conversations (or plain texts) with a saved reward model; evaluation, PPO and GRPO reuse it.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from oasst.training.datasets import Kind, Pairing, Record, TreeFilter, extract, split_records

if TYPE_CHECKING:
    import torch

__all__ = [
    "CONFIG",
    "RankingCollator",
    "RewardModelConfig",
    "RewardScorer",
    "encode_reply",
    "load_examples",
    "ranking_loss",
    "run",
    "score",
]

Message = Mapping[str, str]
Scorable = Union[str, Sequence[Message]]  # noqa: UP007  (a runtime alias; `|` on a str is not allowed)


@dataclass
class RewardModelConfig:
    """How to train the reward model. Every field can be set in YAML or as ``key=value``."""

    model: str = field(
        default="models/sft", metadata={"help": "Base model directory (SFT or bootstrap; any HF causal LM)."}
    )
    data: list[str] = field(
        default_factory=list,
        metadata={
            "help": "oasst exports (.jsonl[.gz]) or RM-group record files (`oasst data convert --kind rm`)."
        },
    )
    eval_data: str | None = field(
        default=None,
        metadata={"help": "Held-out groups (export or records); default: val_fraction of data's trees."},
    )
    output_dir: str = field(default="models/rm", metadata={"help": "Where the reward model is written."})
    langs: list[str] | None = field(
        default=None,
        metadata={"help": "Keep groups whose prompt is in these languages (e.g. [en, de]); null: all."},
    )
    val_fraction: float = field(
        default=0.1, metadata={"help": "Share of trees held out for evaluation (when no eval_data)."}
    )
    max_replies: int = field(
        default=5, metadata={"help": "At most this many replies per group, the best ranked ones."}
    )
    max_length: int = field(default=512, metadata={"help": "Tokens per prompt+reply sequence."})
    min_prefix_length: int = field(
        default=256,
        metadata={
            "help": "When cutting a long sequence, keep at least this many prompt tokens (from the end)."
        },
    )
    learning_rate: float = field(default=1e-5, metadata={"help": "Peak learning rate (AdamW)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "transformers scheduler name."})
    epochs: float = field(default=1.0, metadata={"help": "Passes over the training groups."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (-1: use epochs)."})
    batch_size: int = field(default=4, metadata={"help": "Groups (prompts) per device batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    l2_coef: float = field(
        default=0.001, metadata={"help": "L2 penalty on the scores (keeps them near 0; the original's beta)."}
    )
    eval_steps: int = field(default=0, metadata={"help": "Evaluate every this many steps (0: at the end)."})
    logging_steps: int = field(default=10, metadata={"help": "Log the loss every this many steps."})
    bf16: bool = field(default=False, metadata={"help": "bfloat16 mixed precision (GPUs that support it)."})
    report_to: list[str] = field(
        default_factory=list, metadata={"help": "Trackers (tensorboard, wandb, ...); empty: none."}
    )
    seed: int = field(default=0, metadata={"help": "Seed for the split, the head and the data order."})

    def __post_init__(self) -> None:
        if isinstance(self.data, str):
            self.data = [self.data]
        if isinstance(self.langs, str):
            self.langs = [self.langs]
        if self.max_replies < 2:
            raise ValueError("max_replies must be at least 2: a group ranks replies against each other")
        if not 0 <= self.min_prefix_length < self.max_length:
            raise ValueError("min_prefix_length must be at least 0 and less than max_length")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("val_fraction must be at least 0 and less than 1")


CONFIG = RewardModelConfig


# --- data ------------------------------------------------------------------------------------------


def is_export(path: Path) -> bool:
    """Whether a JSONL file holds oasst export lines (trees or messages) rather than training records."""
    from oasst.data import OasstDataError, open_jsonl

    with open_jsonl(path) as stream:
        for line in stream:
            if line.strip():
                try:
                    first = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise OasstDataError(f"invalid JSON: {exc}", path=str(path)) from exc
                return isinstance(first, dict) and (
                    "message_id" in first or {"message_tree_id", "prompt"} <= first.keys()
                )
    raise OasstDataError("the file is empty", path=str(path))


def _as_messages(value: Any, role: str) -> Any:
    # chat feedback exports plain strings; records hold message lists
    return [{"role": role, "content": value}] if isinstance(value, str) else value


def load_examples(
    path: str | Path, kind: Kind, *, langs: Iterable[str] = (), pairing: Pairing = "all"
) -> list[Record]:
    """The training records of one file: an oasst export (extracted with `oasst.training.datasets`) or
    records JSONL. DPO records may also be ``{"prompt", "chosen", "rejected"}`` strings (chat feedback).
    Raises FileNotFoundError / ValueError (an `OasstDataError`) with the file and line of a bad record."""
    from oasst.data import read_message_trees
    from oasst.training.datasets_io import check_record, read_records

    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"data file not found: {source}")
    wanted = frozenset(langs)
    if is_export(source):
        tree_filter = TreeFilter(langs=wanted or None)
        return list(extract(read_message_trees(source), kind, tree_filter, pairing=pairing))
    records = []
    for record in read_records(source):
        if kind == "dpo":
            record["prompt"] = _as_messages(record.get("prompt"), "user")
            record["chosen"] = _as_messages(record.get("chosen"), "assistant")
            record["rejected"] = _as_messages(record.get("rejected"), "assistant")
        check_record(record, kind)
        if not wanted or record["lang"] in wanted:
            records.append(record)
    return records


def load_split(
    data: Sequence[str],
    eval_data: str | None,
    kind: Kind,
    *,
    langs: Iterable[str],
    val_fraction: float,
    seed: int,
    pairing: Pairing = "all",
) -> tuple[list[Record], list[Record]]:
    """(train, validation) records: ``eval_data`` as the validation side, or a per-tree split of ``data``
    (the same split as `oasst data split` and every other trainer: by a hash of the tree id)."""
    if not data:
        raise ValueError("set data=[FILE, ...]: oasst exports or training records (`oasst data convert`)")
    records = [r for path in data for r in load_examples(path, kind, langs=langs, pairing=pairing)]
    if eval_data:
        return records, load_examples(eval_data, kind, langs=langs, pairing=pairing)
    return split_records(records, val_fraction, seed)


# --- encoding --------------------------------------------------------------------------------------


def encode_reply(
    tokenizer: Any, prompt: Sequence[Message], reply: str, max_length: int, min_prefix_length: int = 0
) -> list[int]:
    """Token ids of ``prompt`` + ``reply`` rendered with the chat template, at most ``max_length`` long.

    Too long a sequence loses prompt tokens from the left (keeping at least ``min_prefix_length`` of
    them) and then reply tokens from the right, but always keeps the reply's final eos: that is where
    the score is read.
    """
    prefix_text = tokenizer.apply_chat_template(list(prompt), tokenize=False)
    full_text = tokenizer.apply_chat_template(
        [*prompt, {"role": "assistant", "content": reply}], tokenize=False
    )
    if not full_text.startswith(prefix_text):  # a template that renders history differently
        return _truncate_left(tokenizer(full_text, add_special_tokens=False)["input_ids"], max_length)
    prefix = tokenizer(prefix_text, add_special_tokens=False)["input_ids"]
    completion = tokenizer(full_text[len(prefix_text) :], add_special_tokens=False)["input_ids"]
    if len(prefix) + len(completion) <= max_length:
        return [*prefix, *completion]
    budget = max_length - min(len(prefix), min_prefix_length)
    if len(completion) > budget:
        completion = [*completion[: budget - 1], completion[-1]]
    keep = max_length - len(completion)
    return [*(prefix[-keep:] if keep else []), *completion]


def _truncate_left(ids: list[int], max_length: int) -> list[int]:
    return ids[-max_length:]


def encode_group(tokenizer: Any, record: Record, cfg: RewardModelConfig) -> dict[str, list[list[int]]]:
    replies = record["replies"][: cfg.max_replies]
    return {
        "input_ids": [
            encode_reply(tokenizer, record["prompt"], r, cfg.max_length, cfg.min_prefix_length)
            for r in replies
        ]
    }


@dataclass
class RankingCollator:
    """Flattens groups into one right-padded batch; ``cu_lens`` marks where each group starts and ends
    (``[0, k1, k1+k2, ...]``)."""

    pad_token_id: int

    def __call__(self, groups: list[dict[str, list[list[int]]]]) -> dict[str, torch.Tensor]:
        import torch

        sequences = [seq for group in groups for seq in group["input_ids"]]
        width = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention_mask[row, : len(seq)] = 1
        cu_lens = [0]
        for group in groups:
            cu_lens.append(cu_lens[-1] + len(group["input_ids"]))
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "cu_lens": torch.tensor(cu_lens, dtype=torch.long),
        }


# --- loss and trainer ------------------------------------------------------------------------------


def ranking_loss(scores: torch.Tensor, cu_lens: Sequence[int], l2_coef: float = 0.0) -> torch.Tensor:
    """The K-wise loss: per group (replies best first) the mean over its C(K,2) pairs (i above j) of
    ``-logsigmoid(s_i - s_j) + l2_coef * (s_i² + s_j²) / 2``; then the mean over groups."""
    import torch
    import torch.nn.functional as F

    losses = []
    for start, end in itertools.pairwise(cu_lens):
        group = scores[start:end]
        pairs = torch.combinations(torch.arange(end - start, device=scores.device), 2)
        better, worse = group[pairs[:, 0]], group[pairs[:, 1]]
        pair_losses = -F.logsigmoid(better - worse) + l2_coef * 0.5 * (better**2 + worse**2)
        losses.append(pair_losses.mean())
    return torch.stack(losses).mean()


def _trainer_class() -> type:
    import torch
    from transformers import Trainer

    class RankingTrainer(Trainer):
        """A Trainer whose loss is `ranking_loss` over the groups of a `RankingCollator` batch, and whose
        evaluation hands each group's scores (padded, labels = position or -100) to the metrics."""

        def __init__(self, *args: Any, l2_coef: float, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.l2_coef = l2_coef
            self.model_accepts_loss_kwargs = False  # the loss is a mean over groups: scale by accumulation

        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            cu_lens = inputs["cu_lens"].tolist()
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
            scores = logits.squeeze(-1).float()
            loss = ranking_loss(scores, cu_lens, self.l2_coef)
            return (loss, scores) if return_outputs else loss

        def prediction_step(
            self,
            model: Any,
            inputs: dict[str, Any],
            prediction_loss_only: bool,
            ignore_keys: list[str] | None = None,
        ) -> tuple[Any, Any, Any]:
            inputs = self._prepare_inputs(inputs)
            with torch.no_grad():
                loss, scores = self.compute_loss(model, inputs, return_outputs=True)
            cu_lens = inputs["cu_lens"].tolist()
            sizes = [end - start for start, end in itertools.pairwise(cu_lens)]
            predictions = torch.zeros((len(sizes), max(sizes)), device=scores.device)
            labels = torch.full((len(sizes), max(sizes)), -100, device=scores.device, dtype=torch.long)
            for g, (start, size) in enumerate(zip(cu_lens, sizes, strict=False)):
                predictions[g, :size] = scores[start : start + size]
                labels[g, :size] = torch.arange(size, device=scores.device)
            return loss.detach(), predictions, labels

    return RankingTrainer


def groups_from_predictions(predictions: Any, labels: Any) -> list[list[float]]:
    """Each group's scores (best first) from the padded matrices of `RankingTrainer.prediction_step`."""
    groups = []
    for row, positions in zip(predictions, labels, strict=True):
        kept = [(int(p), float(s)) for s, p in zip(row, positions, strict=True) if p != -100]
        groups.append([s for _, s in sorted(kept)])
    return groups


_EVAL_KEYS = ("loss", "accuracy", "best_worst_accuracy", "kendall_tau", "spearman_rho", "score_diff")


def _eval_metrics(logged: Mapping[str, float]) -> dict[str, float]:
    """The evaluation figures worth a model card (not runtimes)."""
    return {f"eval_{k}": round(logged[f"eval_{k}"], 4) for k in _EVAL_KEYS if f"eval_{k}" in logged}


def _compute_metrics(eval_pred: Any) -> dict[str, float]:
    from oasst.training.metrics import ranking_metrics

    return ranking_metrics(groups_from_predictions(eval_pred.predictions, eval_pred.label_ids))


# --- scoring with a trained reward model -----------------------------------------------------------


class RewardScorer:
    """A reward model and its tokenizer: `score` turns conversations (or plain texts) into floats."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_length: int = 512,
        min_prefix_length: int = 256,
        batch_size: int = 8,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.min_prefix_length = min(min_prefix_length, max_length - 1)
        self.batch_size = batch_size

    @classmethod
    def load(cls, path: str | Path, *, batch_size: int = 8, device: str | None = None) -> RewardScorer:
        """Load a reward model directory (the settings it was trained with come from its model card)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from oasst.training.common import read_model_card

        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no model in {folder} (config.json is missing)")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        if device is not None:
            model.to(device)
        model.eval()
        trained = ((read_model_card(folder) or {}).get("config")) or {}
        return cls(
            model,
            tokenizer,
            max_length=int(trained.get("max_length", min(tokenizer.model_max_length, 2048))),
            min_prefix_length=int(trained.get("min_prefix_length", 256)),
            batch_size=batch_size,
        )

    def encode(self, item: Scorable) -> list[int]:
        """A conversation ending with the assistant reply to judge is rendered with the chat template; a
        plain text is taken as it is, with eos appended when missing (the model was trained on replies
        ending with eos)."""
        if isinstance(item, str):
            text = item if item.endswith(self.tokenizer.eos_token) else item + self.tokenizer.eos_token
            return _truncate_left(
                self.tokenizer(text, add_special_tokens=False)["input_ids"], self.max_length
            )
        messages = list(item)
        if not messages or messages[-1]["role"] != "assistant":
            raise ValueError("a conversation to score must end with an assistant message")
        return encode_reply(
            self.tokenizer, messages[:-1], messages[-1]["content"], self.max_length, self.min_prefix_length
        )

    def score(self, items: Sequence[Scorable]) -> list[float]:
        import torch

        collate = RankingCollator(self.tokenizer.pad_token_id)
        device = next(self.model.parameters()).device
        scores: list[float] = []
        for start in range(0, len(items), self.batch_size):
            batch = collate([{"input_ids": [self.encode(x) for x in items[start : start + self.batch_size]]}])
            with torch.no_grad():
                logits = self.model(
                    input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
                ).logits
            scores.extend(float(s) for s in logits[:, 0].float().cpu())
        return scores

    def score_groups(self, groups: Sequence[Record]) -> list[list[float]]:
        """The scores of each RM group's replies (best first)."""
        flat = [[*g["prompt"], {"role": "assistant", "content": r}] for g in groups for r in g["replies"]]
        scores = self.score(flat)
        out, start = [], 0
        for g in groups:
            out.append(scores[start : start + len(g["replies"])])
            start += len(g["replies"])
        return out


def score(reward_model: str | Path | RewardScorer, items: Sequence[Scorable]) -> list[float]:
    """Scores of conversations (each ending with the assistant reply to judge) or plain texts."""
    scorer = reward_model if isinstance(reward_model, RewardScorer) else RewardScorer.load(reward_model)
    return scorer.score(items)


# --- training --------------------------------------------------------------------------------------


def run(cfg: RewardModelConfig) -> Path:
    """Train the reward model on ``cfg.data``; write it with its tokenizer and a model card."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainingArguments

    from oasst.training.callbacks import use_rich_progress
    from oasst.training.common import set_seed_and_threads, write_model_card
    from oasst.training.tokenizer import apply_prompt_format

    if not Path(cfg.model, "config.json").is_file():
        raise FileNotFoundError(f"no model in {cfg.model} (config.json is missing); set model=DIR")
    train_records, val_records = load_split(
        cfg.data, cfg.eval_data, "rm", langs=cfg.langs or (), val_fraction=cfg.val_fraction, seed=cfg.seed
    )
    if not train_records:
        raise ValueError(
            f"no ranked groups to train on in {', '.join(cfg.data)}"
            + (f" for languages {', '.join(cfg.langs)}" if cfg.langs else "")
            + ": a group needs a prompt with at least two ranked replies"
        )
    set_seed_and_threads(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    model = AutoModelForSequenceClassification.from_pretrained(cfg.model, num_labels=1)
    apply_prompt_format(tokenizer, model)  # also sets config.pad_token_id, needed to find the last token
    train_set = [encode_group(tokenizer, r, cfg) for r in train_records]
    val_set = [encode_group(tokenizer, r, cfg) for r in val_records]

    args = TrainingArguments(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps,
        lr_scheduler_type=cfg.lr_scheduler_type,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        logging_steps=cfg.logging_steps,
        eval_strategy="steps" if cfg.eval_steps and val_set else "no",
        eval_steps=cfg.eval_steps or None,
        save_strategy="no",
        report_to=cfg.report_to,
        seed=cfg.seed,
        bf16=cfg.bf16,
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,
    )
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set or None,
        data_collator=RankingCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        compute_metrics=_compute_metrics,
        l2_coef=cfg.l2_coef,
    )
    use_rich_progress(trainer, "reward model")
    metrics: dict[str, Any] = {}
    if val_set:
        before = trainer.evaluate()
        metrics.update({f"initial_{k}": v for k, v in _eval_metrics(before).items()})
    started = time.monotonic()
    result = trainer.train()
    metrics["train_loss"] = round(result.training_loss, 4)
    metrics["train_seconds"] = round(time.monotonic() - started, 1)
    metrics["steps"] = result.global_step
    if val_set:
        after = trainer.evaluate()
        metrics.update(_eval_metrics(after))

    out = Path(cfg.output_dir)
    trainer.save_model(str(out))
    tokenizer.save_pretrained(out)
    write_model_card(
        out,
        kind="rm",
        base_model=cfg.model,
        data={
            "sources": cfg.data,
            "train_groups": len(train_set),
            "train_replies": sum(len(g["input_ids"]) for g in train_set),
            "eval_groups": len(val_set),
        },
        config=asdict(cfg),
        metrics=metrics,
    )
    return out
