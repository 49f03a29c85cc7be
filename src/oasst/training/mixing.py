"""Dataset mixes: several datasets, each subsampled as the YAML config says, into train and validation.

```yaml
kind: sft              # sft | rm | dpo | rl: the records every dataset gives
seed: 0                # the same seed gives the same mix, record for record
val_fraction: 0.05     # default share of each dataset's trees held out for validation
datasets:
  - name: oasst-top1
    path: exports/oasst2.trees.jsonl.gz    # relative to this file
    format: oasst      # oasst | records | alpaca | sharegpt | openai | prompt-response | hf-disk
    langs: [en, de]
    top_k: 1
    fraction: 0.5      # half of its training records ...
  - path: data/alpaca.json
    format: alpaca
    size: 1000         # ... or exactly this many
```

Each dataset is first split by tree (`oasst.training.datasets.split_of`, with its own `val_fraction` or
the mix's), then `fraction` (0-1, rounded to the nearest record) or `size` (an exact count, at most what
the dataset has) picks records from its training side at random with the seed; the validation side is
kept whole. Without either, every record is used. The original Open Assistant accepted these two keys
and silently ignored them unless a special sampler was on; here they always apply, and any key this
module does not know, or a path that does not exist, is an error naming it.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from oasst.data import read_message_trees
from oasst.data.errors import describe_validation_error
from oasst.training.datasets import Kind, Pairing, Record, TreeFilter, extract, split_key, split_of
from oasst.training.datasets_io import read_records, write_records
from oasst.training.formats import read_format

__all__ = [
    "DatasetSpec",
    "DatasetSummary",
    "MixConfig",
    "MixError",
    "MixResult",
    "build_mix",
    "load_mix_config",
    "mix_from_file",
    "read_dataset",
    "write_mix",
]

SourceFormat = Literal["oasst", "records", "alpaca", "sharegpt", "openai", "prompt-response", "hf-disk"]
_OASST_ONLY = (
    "langs",
    "per_message_lang",
    "states",
    "include_deleted",
    "include_rejected",
    "include_synthetic",
    "min_length",
    "max_length",
    "top_k",
    "best_path",
    "pairing",
)
ProgressFn = Callable[[str, int], None]
"""Called with a dataset's name and how many of its records have been read so far."""


class MixError(ValueError):
    """A mix config that cannot be used: bad YAML, an unknown key, a missing file, an impossible size."""


class DatasetSpec(BaseModel):
    """One dataset of a mix."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="A file (a directory for hf-disk), relative to the config file.")
    name: str | None = Field(None, description="The name in summaries; default: the file name.")
    format: SourceFormat = Field(
        "oasst", description="oasst exports, records (oasst training JSONL), adapters."
    )
    fraction: float | None = Field(None, gt=0, le=1, description="Share of its training records to use.")
    size: int | None = Field(None, ge=0, description="Exact number of its training records to use.")
    val_fraction: float | None = Field(None, ge=0, le=1, description="Default: the mix's val_fraction.")
    split: str | None = Field(None, description="The split of an hf-disk DatasetDict (default train).")
    # oasst exports only
    langs: list[str] | None = Field(None, description="Languages of the initial prompt; default all.")
    per_message_lang: bool = Field(False, description="Drop messages in other languages too.")
    states: list[str] | None = Field(["ready_for_export"], description="Tree states; null for all.")
    include_deleted: bool = False
    include_rejected: bool = False
    include_synthetic: bool = False
    min_length: int = Field(0, ge=0, description="Drop messages shorter than this (characters).")
    max_length: int | None = Field(None, ge=1, description="Drop messages longer than this.")
    top_k: int | None = Field(None, ge=1, description="SFT: only replies ranked among the k best.")
    best_path: bool = Field(False, description="SFT: one thread per tree, the best-ranked path.")
    pairing: Pairing = Field("all", description="DPO: all ranked pairs, or best against each other.")

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        if self.fraction is not None and self.size is not None:
            raise ValueError("give fraction or size, not both")
        if self.format != "oasst":
            given = sorted(self.model_fields_set & set(_OASST_ONLY))
            if given:
                raise ValueError(f"{', '.join(given)} only apply to format oasst, not {self.format}")
        if self.split is not None and self.format != "hf-disk":
            raise ValueError("split only applies to format hf-disk")
        return self

    @property
    def label(self) -> str:
        return self.name or Path(self.path).name

    def tree_filter(self) -> TreeFilter:
        return TreeFilter(
            langs=frozenset(self.langs) if self.langs is not None else None,
            per_message_lang=self.per_message_lang,
            states=frozenset(self.states) if self.states is not None else None,
            include_deleted=self.include_deleted,
            include_rejected=self.include_rejected,
            include_synthetic=self.include_synthetic,
            min_length=self.min_length,
            max_length=self.max_length,
        )


class MixConfig(BaseModel):
    """A whole mix: what kind of records, the seed, the default validation share, the datasets."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind = "sft"
    seed: int = 0
    val_fraction: float = Field(0.05, ge=0, le=1)
    shuffle: bool = Field(True, description="Shuffle the mixed training records (with the seed).")
    datasets: list[DatasetSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> MixConfig:
        labels = [d.label for d in self.datasets]
        if dupes := sorted({x for x in labels if labels.count(x) > 1}):
            raise ValueError(f"dataset names must be unique; give a name to: {', '.join(dupes)}")
        for d in self.datasets:
            if self.kind != "sft" and d.format not in ("oasst", "records"):
                raise ValueError(f"{d.label}: format {d.format} only gives sft records, not {self.kind}")
            if self.kind != "sft" and d.model_fields_set & {"top_k", "best_path"}:
                raise ValueError(f"{d.label}: top_k and best_path only apply to kind sft")
            if self.kind != "dpo" and "pairing" in d.model_fields_set:
                raise ValueError(f"{d.label}: pairing only applies to kind dpo")
        return self


@dataclass
class DatasetSummary:
    """What one dataset gave: its training records before and after sampling, and its validation ones."""

    name: str
    available: int
    train: int
    validation: int


@dataclass
class MixResult:
    train: list[Record] = field(default_factory=list)
    validation: list[Record] = field(default_factory=list)
    datasets: list[DatasetSummary] = field(default_factory=list)


def load_mix_config(path: str | os.PathLike[str]) -> MixConfig:
    """Read and check a mix config; dataset paths come back resolved against the config's folder."""
    import yaml

    config_path = Path(path)
    try:
        data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MixError(f"cannot read the mix config {config_path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise MixError(f"{config_path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise MixError(f"{config_path} must hold a mapping with a 'datasets' list")
    try:
        config = MixConfig.model_validate(data)
    except ValidationError as exc:
        raise MixError(f"{config_path}: {describe_validation_error(exc, limit=5)}") from exc
    for i, spec in enumerate(config.datasets):
        resolved = (config_path.parent / spec.path).resolve()
        if not resolved.exists():
            raise MixError(f"{config_path}: datasets.{i}.path: {resolved} does not exist")
        spec.path = str(resolved)
    return config


def read_dataset(spec: DatasetSpec, kind: Kind) -> Iterator[Record]:
    """Every record one dataset gives, before splitting and sampling."""
    if spec.format == "oasst":
        trees = read_message_trees(spec.path)
        return extract(
            trees, kind, spec.tree_filter(), top_k=spec.top_k, best_path=spec.best_path, pairing=spec.pairing
        )
    if spec.format == "records":
        return read_records(spec.path, kind)
    return read_format(spec.path, spec.format, split=spec.split)


def _sample_count(spec: DatasetSpec, available: int) -> int:
    if spec.size is not None:
        if spec.size > available:
            raise MixError(
                f"dataset {spec.label} has {available} training records; size asks for {spec.size}"
            )
        return spec.size
    if spec.fraction is not None:
        return math.floor(spec.fraction * available + 0.5)
    return available


def build_mix(config: MixConfig, *, on_progress: ProgressFn | None = None) -> MixResult:
    """Read, split and sample every dataset of `config` into one mix (deterministic for the seed)."""
    result = MixResult()
    for index, spec in enumerate(config.datasets):
        val_fraction = config.val_fraction if spec.val_fraction is None else spec.val_fraction
        train: list[Record] = []
        validation: list[Record] = []
        for n, record in enumerate(read_dataset(spec, config.kind), start=1):
            side = split_of(split_key(record), val_fraction, config.seed)
            (validation if side == "validation" else train).append(record)
            if on_progress is not None and n % 200 == 0:
                on_progress(spec.label, n)
        if on_progress is not None:
            on_progress(spec.label, len(train) + len(validation))
        count = _sample_count(spec, len(train))
        rng = random.Random(f"{config.seed}/{index}/{spec.label}")
        picked = sorted(rng.sample(range(len(train)), count))
        result.train.extend(train[i] for i in picked)
        result.validation.extend(validation)
        result.datasets.append(DatasetSummary(spec.label, len(train), count, len(validation)))
    if config.shuffle:
        random.Random(config.seed).shuffle(result.train)
    return result


def write_mix(result: MixResult, out_dir: str | os.PathLike[str], *, gzip: bool = False) -> tuple[Path, Path]:
    """Write `train.jsonl` and `validation.jsonl` (`.jsonl.gz` with `gzip`) into `out_dir`."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".jsonl.gz" if gzip else ".jsonl"
    train, validation = folder / f"train{suffix}", folder / f"validation{suffix}"
    write_records(train, result.train)
    write_records(validation, result.validation)
    return train, validation


def mix_from_file(path: str | os.PathLike[str], *, on_progress: ProgressFn | None = None) -> MixResult:
    """`load_mix_config` then `build_mix`: the mix a YAML file describes."""
    return build_mix(load_mix_config(path), on_progress=on_progress)
