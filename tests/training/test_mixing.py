"""Mixes from YAML: fraction and size give exact counts, the seed fixes the mix, bad configs fail clearly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from oasst.data import ExportMessageTree
from oasst.training.datasets import TreeFilter, sft_records, split_records
from oasst.training.datasets_io import read_records, write_records
from oasst.training.mixing import MixConfig, MixError, build_mix, load_mix_config, mix_from_file, write_mix
from tests.training.test_datasets import SAMPLE, sample  # noqa: F401 (a fixture)

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "data"


def write_config(tmp_path: Path, config: dict[str, Any], name: str = "mix.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def oasst(**extra: Any) -> dict[str, Any]:
    return {"path": str(SAMPLE), **extra}


def test_fraction_and_size_give_exact_counts(tmp_path: Path, sample: list[ExportMessageTree]) -> None:  # noqa: F811
    config = {
        "seed": 3,
        "val_fraction": 0.1,
        "datasets": [
            oasst(name="all"),
            oasst(name="half", fraction=0.5),
            oasst(name="seven", size=7),
            oasst(name="es", langs=["es"], fraction=0.25),
        ],
    }
    result = mix_from_file(write_config(tmp_path, config))
    train, validation = split_records(sft_records(sample), 0.1, seed=3)
    es_train, es_val = split_records(sft_records(sample, TreeFilter(langs=frozenset({"es"}))), 0.1, seed=3)
    summary = {d.name: (d.available, d.train, d.validation) for d in result.datasets}
    assert summary == {
        "all": (len(train), len(train), len(validation)),
        "half": (len(train), round(len(train) / 2), len(validation)),
        "seven": (len(train), 7, len(validation)),
        "es": (len(es_train), int(len(es_train) * 0.25 + 0.5), len(es_val)),
    }
    assert len(result.train) == sum(d.train for d in result.datasets)
    assert len(result.validation) == sum(d.validation for d in result.datasets)
    # sampling picks from the training side only: no validation tree is in train
    assert not {r["tree_id"] for r in result.train} & {r["tree_id"] for r in result.validation}


def test_the_same_seed_gives_the_same_mix_and_another_seed_another(tmp_path: Path) -> None:
    config = {"seed": 1, "datasets": [oasst(fraction=0.5)]}
    first = mix_from_file(write_config(tmp_path, config))
    again = mix_from_file(write_config(tmp_path, config))
    assert first.train == again.train and first.validation == again.validation
    other = mix_from_file(write_config(tmp_path, {**config, "seed": 2}))
    assert other.train != first.train


def test_mixes_records_and_adapter_files_with_the_export(tmp_path: Path) -> None:
    records = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(10)
    ]
    write_records(tmp_path / "records.jsonl", records)
    alpaca = [{"instruction": f"i{i}", "input": "", "output": f"o{i}"} for i in range(12)]
    (tmp_path / "alpaca.json").write_text(json.dumps(alpaca))
    config = {
        "val_fraction": 0.0,
        "shuffle": False,
        "datasets": [
            {"path": "records.jsonl", "format": "records", "size": 4},
            {"path": "alpaca.json", "format": "alpaca", "fraction": 0.5},
            oasst(size=5),
        ],
    }
    result = mix_from_file(write_config(tmp_path, config))
    assert [(d.name, d.train) for d in result.datasets] == [
        ("records.jsonl", 4),
        ("alpaca.json", 6),
        ("oasst2_sample.trees.jsonl", 5),
    ]
    assert len(result.train) == 15 and result.validation == []
    # shuffle off: the datasets stay in order
    assert [r["messages"][0]["content"][0] for r in result.train[:10]] == ["q"] * 4 + ["i"] * 6
    train_path, val_path = write_mix(result, tmp_path / "out", gzip=True)
    assert train_path.name == "train.jsonl.gz" and len(list(read_records(train_path, "sft"))) == 15
    assert list(read_records(val_path)) == []


def test_each_kind_mixes_from_an_export(tmp_path: Path) -> None:
    for kind in ("rm", "dpo", "rl"):
        result = mix_from_file(write_config(tmp_path, {"kind": kind, "datasets": [oasst()]}))
        assert result.train and result.validation
        key = {"rm": "replies", "dpo": "chosen", "rl": "prompt"}[kind]
        assert all(key in r for r in result.train)


@pytest.mark.parametrize(
    ("config", "error"),
    [
        (
            {"datasets": [oasst(fraction=0.5, weight=2)]},
            r"datasets\.0\.weight: Extra inputs are not permitted",
        ),
        ({"dataset": [oasst()]}, r"dataset: Extra inputs are not permitted"),
        (
            {"datasets": [oasst(fraction=1.5)]},
            r"datasets\.0\.fraction: Input should be less than or equal to 1",
        ),
        ({"datasets": [oasst(fraction=0.5, size=3)]}, "give fraction or size, not both"),
        ({"datasets": []}, "datasets: List should have at least 1 item"),
        ({"datasets": [{"path": "missing.jsonl"}]}, r"datasets\.0\.path: .*missing\.jsonl does not exist"),
        ({"datasets": [oasst(), oasst()]}, "dataset names must be unique"),
        (
            {"datasets": [{"path": str(SAMPLE), "format": "alpaca", "langs": ["en"]}]},
            "langs only apply to format oasst",
        ),
        ({"kind": "rm", "datasets": [{"path": str(SAMPLE), "format": "alpaca"}]}, "only gives sft records"),
        ({"kind": "rm", "datasets": [oasst(top_k=1)]}, "top_k and best_path only apply to kind sft"),
        ({"kind": "sft", "datasets": [oasst(pairing="best")]}, "pairing only applies to kind dpo"),
        ({"kind": "ppo", "datasets": [oasst()]}, r"kind: Input should be 'sft', 'rm', 'dpo' or 'rl'"),
    ],
)
def test_bad_configs_fail_naming_the_problem(tmp_path: Path, config: dict[str, Any], error: str) -> None:
    with pytest.raises(MixError, match=error):
        load_mix_config(write_config(tmp_path, config))


def test_a_size_larger_than_the_dataset_is_an_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"datasets": [oasst(name="small", langs=["de"], size=10_000)]})
    with pytest.raises(MixError, match=r"dataset small has \d+ training records; size asks for 10000"):
        mix_from_file(path)


def test_unreadable_configs(tmp_path: Path) -> None:
    with pytest.raises(MixError, match="cannot read the mix config"):
        load_mix_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("datasets: [\n")
    with pytest.raises(MixError, match="not valid YAML"):
        load_mix_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(MixError, match="must hold a mapping"):
        load_mix_config(tmp_path / "list.yaml")


def test_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write_records(
        tmp_path / "r.jsonl",
        [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}],
    )
    config = load_mix_config(
        write_config(tmp_path / "sub", {"datasets": [{"path": "../r.jsonl", "format": "records"}]})
    )
    assert config.datasets[0].path == str((tmp_path / "r.jsonl").resolve())


def test_the_example_configs_are_valid(sample: list[ExportMessageTree]) -> None:  # noqa: F811
    paths = sorted(CONFIGS.glob("*.yaml"))
    assert paths
    for path in paths:
        MixConfig.model_validate(yaml.safe_load(path.read_text()))
        if path.name.startswith("sample-"):
            result = build_mix(load_mix_config(path))
            assert result.train and result.validation, path
