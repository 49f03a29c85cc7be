"""Evaluating models: sampling reports, reward-model accuracy on held-out rankings, win rates.

* `sampling_report`: every prompt × every sampling setting (greedy, top-k/top-p/temperature presets, from
  a YAML config) → generations with the chat template, each scored by a reward model when one is given;
  a JSON report plus a Markdown summary (the original Open Assistant's manual-eval sampling report, with
  its ``sampling_score`` folded in).
* `evaluate_reward_model`: accuracy, Kendall tau and Spearman rho of a reward model on ranked groups it
  did not train on (by default the validation trees of the split it was trained with).
* `compare_models`: a model and a baseline answer the same prompts; the win rate of the model under a
  reward model (ties count half) with a bootstrap confidence interval.

``oasst eval sampling|rm|winrate`` are the command-line faces of these functions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "GENERATION_KEYS",
    "Generator",
    "SamplingConfig",
    "compare_models",
    "evaluate_reward_model",
    "load_prompts",
    "load_sampling_config",
    "markdown_summary",
    "sampling_report",
    "write_report",
]

Messages = list[dict[str, str]]

# the generate() settings a sampling setting may use (anything else is a typo, refused)
GENERATION_KEYS = frozenset(
    {
        "do_sample",
        "temperature",
        "top_p",
        "top_k",
        "typical_p",
        "min_p",
        "repetition_penalty",
        "no_repeat_ngram_size",
        "num_beams",
        "max_new_tokens",
        "min_new_tokens",
    }
)


SAMPLING_KEYS = ("temperature", "top_p", "top_k", "typical_p", "min_p")


@dataclass
class SamplingConfig:
    """Named sampling settings and what they share (see ``configs/eval/sampling-default.yaml``)."""

    settings: dict[str, dict[str, Any]] = field(default_factory=lambda: {"greedy": {"do_sample": False}})
    max_new_tokens: int = 128
    num_samples: int = 1  # generations per prompt and setting
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.settings:
            raise ValueError("a sampling config needs at least one setting")
        for name, params in self.settings.items():
            if not isinstance(params, dict):
                raise ValueError(f"setting {name!r} must be a mapping of generation parameters")
            unknown = sorted(set(params) - GENERATION_KEYS - {"system"})
            if unknown:
                raise ValueError(
                    f"setting {name!r}: unknown parameter(s) {', '.join(unknown)}; "
                    f"known: system, {', '.join(sorted(GENERATION_KEYS))}"
                )
        if self.num_samples < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("num_samples, max_new_tokens and batch_size must be at least 1")


def load_sampling_config(path: str | Path | None) -> SamplingConfig:
    """The config in a YAML file (``settings:`` plus shared keys); None gives greedy decoding only."""
    from oasst.training.common import ConfigError, load_config

    try:
        return load_config(SamplingConfig, Path(path) if path is not None else None)
    except ConfigError as exc:
        raise ValueError(f"sampling config {path}: {exc}") from exc


# --- prompts ---------------------------------------------------------------------------------------


def load_prompts(path: str | Path, *, limit: int | None = None, langs: Iterable[str] = ()) -> list[Messages]:
    """Conversations to answer, each ending with a user message, from:

    * an oasst export: every thread that ends with a prompter message (filtered by ``langs``);
    * a JSONL file whose lines are strings, ``{"prompt": text or messages}``, ``{"text": ...}`` or RL
      records;
    * any other text file: one prompt per line.
    """
    from oasst.training.rm import is_export, load_examples

    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"prompts file not found: {source}")
    if source.name.endswith((".jsonl", ".jsonl.gz")):
        if is_export(source):
            prompts = [r["prompt"] for r in load_examples(source, "rl", langs=langs)]
        else:
            prompts = list(_jsonl_prompts(source, frozenset(langs)))
    else:
        lines = source.read_text(encoding="utf-8").splitlines()
        prompts = [[{"role": "user", "content": line.strip()}] for line in lines if line.strip()]
    if not prompts:
        raise ValueError(f"no prompts in {source}")
    return prompts[:limit] if limit else prompts


def _jsonl_prompts(source: Path, langs: frozenset[str]) -> Iterator[Messages]:
    from oasst.data import OasstDataError, open_jsonl

    with open_jsonl(source) as stream:
        for lineno, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise OasstDataError(f"invalid JSON: {exc}", path=str(source), line=lineno) from exc
            if isinstance(row, dict) and langs and row.get("lang") not in langs:
                continue
            value = row.get("prompt", row.get("text")) if isinstance(row, dict) else row
            if isinstance(value, str) and value.strip():
                yield [{"role": "user", "content": value}]
            elif isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
                yield [{"role": m["role"], "content": m["content"]} for m in value]
            else:
                raise OasstDataError(
                    "expected a string, or an object with 'prompt' (text or messages) or 'text'",
                    path=str(source),
                    line=lineno,
                )


# --- generation ------------------------------------------------------------------------------------


@contextmanager
def _progress(description: str, total: int, show: bool) -> Iterator[Callable[[int], None]]:
    if not show:
        yield lambda done: None
        return
    from oasst.training.callbacks import RichProgress

    with RichProgress(description, total) as bar:
        yield lambda done: bar.update(done)


class Generator:
    """A causal LM and its tokenizer, answering conversations with the chat template."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> Generator:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no model in {folder} (config.json is missing)")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        if tokenizer.chat_template is None:
            from oasst.training.tokenizer import apply_prompt_format

            apply_prompt_format(tokenizer)
        model: Any = AutoModelForCausalLM.from_pretrained(folder)
        if device is not None:
            model.to(device)
        model.eval()
        return cls(model, tokenizer)

    def generate(
        self,
        prompts: Sequence[Messages],
        params: Mapping[str, Any],
        *,
        max_new_tokens: int,
        num_samples: int = 1,
        batch_size: int = 8,
        seed: int = 0,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[list[str]]:
        """``num_samples`` replies to each prompt (a setting's ``system`` text is put first). Settings with
        temperature/top_p/top_k/typical_p/min_p sample unless they say ``do_sample: false``; the others
        decode deterministically and give one reply per prompt (with beams: up to ``num_beams``)."""
        import torch
        from transformers import GenerationConfig

        params = dict(params)
        system = params.pop("system", None)
        params.setdefault("max_new_tokens", max_new_tokens)
        params.setdefault("do_sample", any(k in params for k in SAMPLING_KEYS))
        if not params["do_sample"]:  # deterministic: more samples would be copies (or the next beams)
            num_samples = min(num_samples, params.get("num_beams") or 1)
        config = GenerationConfig(
            **params,
            num_return_sequences=num_samples,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        torch.manual_seed(seed)
        device = next(self.model.parameters()).device
        replies: list[list[str]] = []
        for start in range(0, len(prompts), batch_size):
            texts = [
                self.tokenizer.apply_chat_template(
                    ([{"role": "system", "content": system}] if system else []) + list(p),
                    add_generation_prompt=True,
                    tokenize=False,
                )
                for p in prompts[start : start + batch_size]
            ]
            batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(
                device
            )
            with torch.no_grad():
                output = self.model.generate(**batch, generation_config=config)
            new = output[:, batch["input_ids"].shape[1] :]
            decoded = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            replies.extend(decoded[i : i + num_samples] for i in range(0, len(decoded), num_samples))
            if on_batch is not None:
                on_batch(min(start + batch_size, len(prompts)))
        return replies


# --- sampling report -------------------------------------------------------------------------------


def sampling_report(
    model: str | Path | Generator,
    prompts: Sequence[Messages],
    config: SamplingConfig,
    *,
    reward_model: str | Path | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Generate for every prompt × setting; score every output with ``reward_model`` when given."""
    from oasst.training.rm import RewardScorer

    generator = model if isinstance(model, Generator) else Generator.load(model)
    scorer = RewardScorer.load(reward_model) if reward_model is not None else None
    results: list[list[dict[str, Any]]] = [[] for _ in prompts]
    for name, params in config.settings.items():
        with _progress(f"sampling: {name}", len(prompts), show_progress) as advance:
            outputs = generator.generate(
                prompts,
                params,
                max_new_tokens=config.max_new_tokens,
                num_samples=config.num_samples,
                batch_size=config.batch_size,
                seed=config.seed,
                on_batch=advance,
            )
        scores: list[list[float]] | None = None
        if scorer is not None:
            flat = [
                [*p, {"role": "assistant", "content": o}]
                for p, outs in zip(prompts, outputs, strict=True)
                for o in outs
            ]
            flat_scores = scorer.score(flat)
            scores, start = [], 0
            for outs in outputs:
                scores.append(flat_scores[start : start + len(outs)])
                start += len(outs)
        for i, outs in enumerate(outputs):
            results[i].append(
                {"setting": name, "params": params, "outputs": outs, "scores": scores[i] if scores else None}
            )
    return {
        "model": str(model if not isinstance(model, Generator) else "<in memory>"),
        "reward_model": str(reward_model) if reward_model is not None else None,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": asdict(config),
        "prompts": [{"prompt": p, "results": r} for p, r in zip(prompts, results, strict=True)],
        "summary": _summary(results, list(config.settings)),
    }


def _summary(results: list[list[dict[str, Any]]], settings: list[str]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for name in [*settings, "overall"]:
        entries = [e for per_prompt in results for e in per_prompt if name in (e["setting"], "overall")]
        outputs = [o for e in entries for o in e["outputs"]]
        scores = [s for e in entries for s in (e["scores"] or [])]
        summary[name] = {
            "samples": len(outputs),
            "mean_length_chars": round(sum(map(len, outputs)) / max(len(outputs), 1), 1),
            "mean_score": round(sum(scores) / len(scores), 4) if scores else None,
            "min_score": round(min(scores), 4) if scores else None,
            "max_score": round(max(scores), 4) if scores else None,
        }
    return summary


def markdown_summary(report: Mapping[str, Any], *, max_chars: int = 300) -> str:
    """A readable page: the per-setting summary table, then the first output of each setting per prompt."""
    lines = [
        f"# Sampling report: `{report['model']}`",
        "",
        f"{report['date']}; {len(report['prompts'])} prompts"
        + (f"; scored by `{report['reward_model']}`" if report.get("reward_model") else "")
        + ".",
        "",
        "| setting | samples | mean length (chars) | mean score | min | max |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in report["summary"].items():
        cells = [row["mean_score"], row["min_score"], row["max_score"]]
        shown = " | ".join("–" if c is None else f"{c:.3f}" for c in cells)
        lines.append(f"| {name} | {row['samples']} | {row['mean_length_chars']} | {shown} |")
    for number, item in enumerate(report["prompts"], start=1):
        last = item["prompt"][-1]["content"]
        lines += ["", f"## {number}. {_one_line(last, 120)}", ""]
        for result in item["results"]:
            score = f" (score {result['scores'][0]:.3f})" if result["scores"] else ""
            lines.append(f"- **{result['setting']}**{score}: {_one_line(result['outputs'][0], max_chars)}")
    return "\n".join(lines) + "\n"


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def write_report(report: Mapping[str, Any], out: str | Path) -> tuple[Path, Path]:
    """Write the JSON report and its Markdown summary beside it (``x.json`` and ``x.md``)."""
    target = Path(out)
    json_path = target if target.suffix == ".json" else target.with_suffix(".json")
    md_path = json_path.with_suffix(".md")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(markdown_summary(report), encoding="utf-8")
    return json_path, md_path


# --- reward model on held-out rankings -------------------------------------------------------------


def evaluate_reward_model(
    reward_model: str | Path,
    data: str | Path,
    *,
    split: str = "validation",
    langs: Iterable[str] | None = None,
    val_fraction: float | None = None,
    seed: int | None = None,
    batch_size: int = 8,
    show_progress: bool = False,
) -> dict[str, float]:
    """Ranking metrics (`oasst.training.metrics.ranking_metrics`) of the reward model on the groups of
    ``data`` that fall on ``split`` ("validation", "train" or "all"). The split's val_fraction, seed and
    languages default to those the reward model was trained with (from its model card), so "validation"
    is exactly the trees it never saw."""
    from oasst.training.common import read_model_card
    from oasst.training.datasets import split_records
    from oasst.training.metrics import ranking_metrics
    from oasst.training.rm import RewardScorer, load_examples

    if split not in ("validation", "train", "all"):
        raise ValueError(f"split must be validation, train or all, not {split!r}")
    trained = (read_model_card(Path(reward_model)) or {}).get("config") or {}
    langs = list(langs) if langs is not None else list(trained.get("langs") or [])
    groups = load_examples(data, "rm", langs=langs)
    if split != "all":
        fraction = val_fraction if val_fraction is not None else float(trained.get("val_fraction", 0.1))
        train, validation = split_records(
            groups, fraction, seed if seed is not None else int(trained.get("seed", 0))
        )
        groups = validation if split == "validation" else train
    if not groups:
        raise ValueError(f"no ranked groups on the {split} side of {data}")
    scorer = RewardScorer.load(reward_model, batch_size=batch_size)
    scores: list[list[float]] = []
    with _progress("scoring groups", len(groups), show_progress) as advance:
        for start in range(0, len(groups), batch_size):
            scores.extend(scorer.score_groups(groups[start : start + batch_size]))
            advance(min(start + batch_size, len(groups)))
    return ranking_metrics(scores)


# --- win rate --------------------------------------------------------------------------------------


def compare_models(
    model: str | Path | Generator,
    baseline: str | Path | Generator,
    reward_model: str | Path,
    prompts: Sequence[Messages],
    *,
    params: Mapping[str, Any] | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    seed: int = 0,
    confidence: float = 0.95,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Both models answer every prompt (same sampling, same seed); the reward model scores the replies;
    the result holds the win rate of ``model`` over ``baseline`` (ties half) with its confidence interval,
    the mean scores, and every prompt's replies and scores."""
    from oasst.training.metrics import win_rate
    from oasst.training.rm import RewardScorer

    if not prompts:
        raise ValueError("no prompts to compare the models on")
    params = dict(params or {"do_sample": False})
    replies: dict[str, list[str]] = {}
    for role, source in (("model", model), ("baseline", baseline)):
        generator = source if isinstance(source, Generator) else Generator.load(source)
        with _progress(f"generating: {role}", len(prompts), show_progress) as advance:
            outputs = generator.generate(
                prompts,
                params,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                seed=seed,
                on_batch=advance,
            )
        replies[role] = [o[0] for o in outputs]
    scorer = RewardScorer.load(reward_model, batch_size=batch_size)
    scores = {
        role: scorer.score(
            [[*p, {"role": "assistant", "content": r}] for p, r in zip(prompts, rs, strict=True)]
        )
        for role, rs in replies.items()
    }
    result = win_rate(scores["model"], scores["baseline"], confidence=confidence, seed=seed)
    return {
        "model": str(model) if not isinstance(model, Generator) else "<in memory>",
        "baseline": str(baseline) if not isinstance(baseline, Generator) else "<in memory>",
        "reward_model": str(reward_model),
        "params": params,
        **result.as_dict(),
        "prompts": len(prompts),
        "mean_score_model": sum(scores["model"]) / len(prompts),
        "mean_score_baseline": sum(scores["baseline"]) / len(prompts),
        "examples": [
            {"prompt": p, "model": a, "baseline": b, "score_model": sa, "score_baseline": sb}
            for p, a, b, sa, sb in zip(
                prompts,
                replies["model"],
                replies["baseline"],
                scores["model"],
                scores["baseline"],
                strict=True,
            )
        ],
    }
