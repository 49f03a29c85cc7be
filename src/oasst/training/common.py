"""What every trainer shares: YAML configs with ``key=value`` overrides, seeding and threads, model cards.

A trainer's config is a dataclass whose fields say what they do (``metadata={"help": ...}``); it is read
from a YAML file, then overridden by ``key=value`` pairs from the command line (values parsed as YAML, so
``learning_rate=1e-4`` is a float and ``lora=true`` a bool). Unknown keys are errors, never ignored.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

C = TypeVar("C")

CARD_JSON = "oasst_training.json"


class ConfigError(ValueError):
    """A config file or override that does not fit the trainer's config."""


def load_config(cls: type[C], path: Path | None = None, overrides: Sequence[str] = ()) -> C:
    """``cls`` built from the YAML file at ``path`` (optional) and ``key=value`` overrides."""
    import yaml

    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of settings, not {type(loaded).__name__}")
        values.update(loaded)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like key=value")
        values[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    return build_config(cls, values)


def build_config(cls: type[C], values: Mapping[str, Any]) -> C:
    assert dataclasses.is_dataclass(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    coerced = {name: _coerce(name, value, hints.get(name)) for name, value in values.items()}
    try:
        return cls(**coerced)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Numbers written the way YAML 1.1 reads as text (``1e-3``) become the field's number type."""
    if not isinstance(value, str) or hint is None:
        return value
    allowed = set(typing.get_args(hint)) or {hint}
    for kind in (int, float):
        if kind in allowed:
            try:
                return kind(value)
            except ValueError:
                if str in allowed:
                    return value
                raise ConfigError(f"{name} must be a number, not {value!r}") from None
    return value


def describe_config(cls: type[Any]) -> list[tuple[str, str, str]]:
    """``(name, default, help)`` of every field, for ``--help`` texts and docs."""
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        rows.append((f.name, default, str(f.metadata.get("help", ""))))
    return rows


def set_seed_and_threads(seed: int) -> None:
    """Reproducible runs; one torch thread per process on CPU unless OMP_NUM_THREADS says otherwise
    (more threads than cores, or beside a busy database, slows small models 5-40x)."""
    import torch
    from transformers import set_seed

    set_seed(seed)
    if not torch.cuda.is_available() and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


def write_model_card(
    out_dir: Path,
    *,
    kind: str,
    base_model: str | None,
    data: Mapping[str, Any],
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
) -> None:
    """``README.md`` (a Hugging Face model card) and ``oasst_training.json`` (the same, for programs)."""
    record = {
        "kind": kind,
        "base_model": base_model,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": dict(data),
        "config": dict(config),
        "metrics": dict(metrics),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CARD_JSON).write_text(json.dumps(record, indent=2, default=str) + "\n")
    lines = [
        "---",
        "library_name: transformers",
        "tags: [oasst, " + kind + "]",
        *([f"base_model: {base_model}"] if base_model else []),
        "---",
        "",
        f"# oasst {kind} model",
        "",
        f"Trained by `oasst train {kind}` on {record['created']}."
        + (f" Base model: `{base_model}`." if base_model else ""),
        "",
        "The tokenizer carries the oasst chat template: `<|system|>…<eos>` (optional), then alternating",
        "`<|prompter|>…<eos>` and `<|assistant|>…<eos>`.",
        "",
        "## Data",
        "",
        *_table(data),
        "",
        "## Metrics",
        "",
        *_table(metrics),
        "",
        "## Configuration",
        "",
        "```json",
        json.dumps(dict(config), indent=2, default=str),
        "```",
        "",
    ]
    (out_dir / "README.md").write_text("\n".join(lines))


def read_model_card(model_dir: Path) -> dict[str, Any] | None:
    path = Path(model_dir) / CARD_JSON
    return json.loads(path.read_text()) if path.is_file() else None


def _table(values: Mapping[str, Any]) -> list[str]:
    if not values:
        return ["(none)"]
    return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in values.items())]
