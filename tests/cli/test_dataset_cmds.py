"""``oasst data stats|convert|filter|split|mix`` on the oasst2 sample, through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from oasst.cli import dataset_cmds
from oasst.data import read_message_trees
from oasst.training.datasets import TreeFilter, dpo_records, rl_records, rm_records, sft_records
from oasst.training.datasets_io import read_records, write_records
from oasst.training.datasets_stats import export_stats
from tests.conftest import sample_missing

SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "oasst2_sample.trees.jsonl"
runner = CliRunner(env={"COLUMNS": "2000"})  # long temporary paths must not wrap


def cli() -> typer.Typer:
    own = typer.Typer()

    @own.callback()
    def _root() -> None:
        """oasst (test)"""

    dataset_cmds.register(own)
    return own


def run(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(cli(), ["data", *map(str, args)])
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture(scope="module")
def sample() -> Path:
    if not SAMPLE.exists():
        sample_missing(f"the oasst2 sample at {SAMPLE}")
    return SAMPLE


def test_the_root_app_has_the_data_group() -> None:
    from oasst.cli.main import app

    assert "data" in {g.name for g in app.registered_groups}


def test_every_command_has_help() -> None:
    for command in ("stats", "convert", "filter", "split", "mix"):
        code, output = run(command, "--help")
        assert code == 0 and "Usage" in output, command


def test_stats_shows_the_library_counts(sample: Path) -> None:
    code, output = run("stats", sample)
    assert code == 0, output
    stats = export_stats(read_message_trees(sample))
    for label, value in [
        ("trees", stats.trees),
        ("messages", stats.messages),
        ("SFT threads", stats.sft_threads),
        ("RM groups", stats.rm_groups),
        ("DPO pairs", stats.dpo_pairs),
        ("RL prompts", stats.rl_prompts),
        ("ready_for_export", 96),
        ("prompt_lottery_waiting", stats.states["prompt_lottery_waiting"]),
    ]:
        assert f"{label} │ {value:,}" in output, label


def test_convert_writes_each_kind(sample: Path, tmp_path: Path) -> None:
    trees = list(read_message_trees(sample))
    expected = {
        "sft": list(sft_records(trees)),
        "rm": list(rm_records(trees)),
        "dpo": list(dpo_records(trees)),
        "rl": list(rl_records(trees)),
    }
    for kind, records in expected.items():
        out = tmp_path / f"{kind}.jsonl"
        code, output = run("convert", sample, out, "--to", kind)
        assert code == 0, output
        assert f"Wrote {len(records):,} {kind} records" in output
        assert list(read_records(out, kind)) == records  # type: ignore[arg-type]


def test_convert_options_top_k_lang_pairs(sample: Path, tmp_path: Path) -> None:
    trees = list(read_message_trees(sample))
    out = tmp_path / "top1.jsonl.gz"
    code, output = run("convert", sample, out, "--top-k", "1", "--lang", "en,de")
    assert code == 0, output
    filtered = TreeFilter(langs=frozenset({"en", "de"}))
    assert list(read_records(out, "sft")) == list(sft_records(trees, filtered, top_k=1))
    code, output = run("convert", sample, tmp_path / "best.jsonl", "--to", "dpo", "--pairs", "best")
    assert code == 0, output
    assert len(list(read_records(tmp_path / "best.jsonl"))) == len(list(dpo_records(trees, pairing="best")))
    code, output = run("convert", sample, tmp_path / "x.jsonl", "--to", "rm", "--top-k", "1")
    assert code == 1 and "--top-k and --best-path only apply to --to sft" in output


def test_convert_from_an_instruction_format(tmp_path: Path) -> None:
    rows = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(3)]
    (tmp_path / "alpaca.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, output = run("convert", tmp_path / "alpaca.jsonl", tmp_path / "out.jsonl", "--from", "alpaca")
    assert code == 0, output
    assert [r["messages"][1]["content"] for r in read_records(tmp_path / "out.jsonl", "sft")] == [
        "a0",
        "a1",
        "a2",
    ]
    code, output = run(
        "convert", tmp_path / "alpaca.jsonl", tmp_path / "o.jsonl", "--from", "alpaca", "--to", "dpo"
    )
    assert code == 1 and "gives SFT records only" in output
    code, output = run(
        "convert", tmp_path / "alpaca.jsonl", tmp_path / "o.jsonl", "--from", "alpaca", "--lang", "en"
    )
    assert code == 1 and "apply to oasst exports only" in output


def test_filter_keeps_the_export_format(sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "es.trees.jsonl"
    code, output = run("filter", sample, out, "--lang", "es", "--state", "all")
    assert code == 0, output
    trees = list(read_message_trees(out))
    assert trees and {t.prompt.lang for t in trees if t.prompt} == {"es"}
    assert f"Wrote {len(trees):,} trees" in output
    # the filtered export converts to the same threads as filtering on the fly
    everything = TreeFilter(langs=frozenset({"es"}), states=None)
    assert list(sft_records(trees, TreeFilter(states=None))) == list(
        sft_records(read_message_trees(sample), everything)
    )


def test_split_an_export_and_records_by_tree(sample: Path, tmp_path: Path) -> None:
    code, output = run(
        "split", sample, "--out-dir", tmp_path / "trees", "--val-fraction", "0.2", "--seed", "5"
    )
    assert code == 0, output
    train_trees = list(read_message_trees(tmp_path / "trees" / "train.trees.jsonl"))
    val_trees = list(read_message_trees(tmp_path / "trees" / "validation.trees.jsonl"))
    assert len(train_trees) + len(val_trees) == 551 and val_trees
    assert f"{len(train_trees):,} trees for training and {len(val_trees):,} for validation" in output
    # the sample holds some trees twice (in two states): both copies land on the same side
    train = {t.message_tree_id for t in train_trees}
    val = {t.message_tree_id for t in val_trees}
    assert not train & val

    write_records(tmp_path / "sft.jsonl", sft_records(read_message_trees(sample), TreeFilter(states=None)))
    code, output = run(
        "split",
        tmp_path / "sft.jsonl",
        "--out-dir",
        tmp_path / "rec",
        "--val-fraction",
        "0.2",
        "--seed",
        "5",
        "--gzip",
    )
    assert code == 0, output
    rec_train = {r["tree_id"] for r in read_records(tmp_path / "rec" / "train.jsonl.gz")}
    rec_val = {r["tree_id"] for r in read_records(tmp_path / "rec" / "validation.jsonl.gz")}
    assert rec_train <= train and rec_val <= val  # the same seed splits records and trees alike


def test_mix_writes_train_and_validation_with_a_summary(sample: Path, tmp_path: Path) -> None:
    config = {
        "seed": 0,
        "val_fraction": 0.1,
        "datasets": [
            {"name": "half", "path": str(sample), "fraction": 0.5},
            {"name": "ten", "path": str(sample), "size": 10},
        ],
    }
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(config))
    code, output = run("mix", tmp_path / "mix.yaml", "--out-dir", tmp_path / "out")
    assert code == 0, output
    train = list(read_records(tmp_path / "out" / "train.jsonl", "sft"))
    validation = list(read_records(tmp_path / "out" / "validation.jsonl", "sft"))
    assert "│ ten │" in output and f"│ all │ │ {len(train)} │ {len(validation)} │" in output
    assert len(train) > 10


def test_mix_errors_are_clear(tmp_path: Path) -> None:
    (tmp_path / "mix.yaml").write_text("datasets:\n  - path: nope.jsonl\n    fraction: 0.5\n")
    code, output = run("mix", tmp_path / "mix.yaml", "--out-dir", tmp_path / "out")
    assert code == 1 and "datasets.0.path" in output and "nope.jsonl does not exist" in output
    (tmp_path / "mix.yaml").write_text(f"datasets:\n  - path: {SAMPLE}\n    share: 0.5\n")
    code, output = run("mix", tmp_path / "mix.yaml", "--out-dir", tmp_path / "out")
    assert code == 1 and "datasets.0.share: Extra inputs are not permitted" in output
    assert not (tmp_path / "out").exists()


def test_bad_input_gives_the_file_and_line(sample: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.trees.jsonl"
    lines = sample.read_text(encoding="utf-8").splitlines()[:3]
    bad.write_text("\n".join([*lines, '{"message_tree_id": "x", "prompt": {"text": 1}}']) + "\n")
    for command in (
        ("stats", bad),
        ("convert", bad, tmp_path / "o.jsonl"),
        ("filter", bad, tmp_path / "f.jsonl"),
    ):
        code, output = run(*command)
        assert code == 1 and f"{bad}:4: invalid message tree" in output, command
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "f.jsonl").exists()
    code, output = run("stats", tmp_path / "missing.jsonl")
    assert code == 1 and "There is no file" in output
    records = tmp_path / "records.jsonl"
    records.write_text(
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n{oops\n'
    )
    code, output = run("split", records, "--out-dir", tmp_path / "s")
    assert code == 1 and f"{records}:2: invalid JSON" in output
