"""Evaluation: sampling reports, reward-model metrics on held-out rankings, win rates, and ``oasst eval``."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from oasst.cli.main import app  # noqa: E402
from oasst.training import evaluate, rm  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT.parent / "shared" / "data" / "oasst2_sample.trees.jsonl"
TOPICS = ["cats", "dogs", "rivers", "stars", "bread", "music", "trees", "trains", "clouds", "books", "tea"]
GOOD = "Happy to help! {T} are wonderful, here is a careful answer about {t}."
MIDDLE = "{T} are fine, I guess."
BAD = "No."


def synthetic_groups(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    groups = []
    for i in range(n):
        t = rng.choice(TOPICS)
        groups.append(
            {
                "prompt": [{"role": "user", "content": f"Tell me about {t}."}],
                "replies": [s.format(t=t, T=t.capitalize()) for s in (GOOD, MIDDLE, BAD)],
                "tree_id": f"group-{seed}-{i}",
                "lang": "en",
            }
        )
    return groups


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny base model; a reward model trained to prefer helpful replies; a "good" policy that learned
    to answer helpfully and a deliberately worse one that learned to answer "No."."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from oasst.data.prompt_format import render
    from oasst.training.bootstrap import BootstrapConfig, bootstrap

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("eval")
    texts = [t for g in synthetic_groups(100, 99) for t in (*g["replies"], g["prompt"][0]["content"])]
    tiny = bootstrap(texts, BootstrapConfig(output_dir=str(folder / "tiny"), vocab_size=600))
    write_jsonl(folder / "groups.jsonl", synthetic_groups(64, 1))
    reward_model = rm.run(
        rm.RewardModelConfig(
            model=str(tiny),
            data=[str(folder / "groups.jsonl")],
            val_fraction=0.25,
            output_dir=str(folder / "rm"),
            max_steps=12,
            batch_size=8,
            learning_rate=1e-3,
            max_length=64,
            min_prefix_length=16,
        )
    )
    out = {"tiny": tiny, "rm": reward_model, "groups": folder / "groups.jsonl"}
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    for name, position in (("good", 0), ("bad", 2)):
        model = AutoModelForCausalLM.from_pretrained(tiny)
        conversations = [
            render([*g["prompt"], {"role": "assistant", "content": g["replies"][position]}], "<|endoftext|>")
            for g in synthetic_groups(64, 3)
        ]
        teach(model, tokenizer, conversations, steps=30)
        model.save_pretrained(folder / name)
        tokenizer.save_pretrained(folder / name)
        out[name] = folder / name
    return out


def teach(model: Any, tokenizer: Any, texts: list[str], steps: int) -> None:
    """Plain language modelling on ``texts`` until the model repeats them."""
    rng = random.Random(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        batch = tokenizer(rng.sample(texts, 8), return_tensors="pt", padding=True, add_special_tokens=False)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def prompts(n: int = 4) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"Tell me about {t}."}] for t in TOPICS[:n]]


# --- prompts and configs -----------------------------------------------------------------------------


def test_prompts_come_from_text_jsonl_and_exports(tmp_path: Path) -> None:
    text = tmp_path / "prompts.txt"
    text.write_text("Hello there\n\nWhat is tea?\n")
    assert evaluate.load_prompts(text) == [
        [{"role": "user", "content": "Hello there"}],
        [{"role": "user", "content": "What is tea?"}],
    ]
    conversation = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    rows = [
        "Plain string",
        {"prompt": "As a prompt"},
        {"text": "As text"},
        {"prompt": [*conversation, conversation[0]]},
    ]
    loaded = evaluate.load_prompts(write_jsonl(tmp_path / "p.jsonl", rows), limit=3)
    assert [p[-1]["content"] for p in loaded] == ["Plain string", "As a prompt", "As text"]
    write_jsonl(tmp_path / "bad.jsonl", [{"question": "?"}])
    with pytest.raises(ValueError, match=r"bad.jsonl:1: expected a string"):
        evaluate.load_prompts(tmp_path / "bad.jsonl")
    if SAMPLE.is_file():
        from_export = evaluate.load_prompts(SAMPLE, langs=["en"], limit=5)
        assert len(from_export) == 5 and all(p[-1]["role"] == "user" for p in from_export)


def test_the_default_sampling_config_loads_and_typos_are_refused(tmp_path: Path) -> None:
    config = evaluate.load_sampling_config(ROOT / "configs" / "eval" / "sampling-default.yaml")
    assert "greedy" in config.settings and len(config.settings) >= 3
    assert evaluate.load_sampling_config(None).settings == {"greedy": {"do_sample": False}}
    bad = tmp_path / "bad.yaml"
    bad.write_text("settings:\n  hot:\n    temprature: 2\n")
    with pytest.raises(ValueError, match="temprature"):
        evaluate.load_sampling_config(bad)


# --- with models -------------------------------------------------------------------------------------


@pytest.mark.slow  # the models fixture trains three tiny models
def test_sampling_report_has_every_prompt_and_setting_with_scores(
    models: dict[str, Path], tmp_path: Path
) -> None:
    config = evaluate.load_sampling_config(ROOT / "configs" / "eval" / "sampling-default.yaml")
    config.max_new_tokens = 12
    config.num_samples = 2
    report = evaluate.sampling_report(models["good"], prompts(3), config, reward_model=models["rm"])
    assert len(report["prompts"]) == 3
    for item in report["prompts"]:
        assert [r["setting"] for r in item["results"]] == list(config.settings)
        for result in item["results"]:
            expected = 1 if result["setting"] == "greedy" else 2  # greedy twice would be a copy
            assert len(result["outputs"]) == expected and len(result["scores"]) == expected
            assert all(isinstance(s, float) for s in result["scores"])
    assert set(report["summary"]) == {*config.settings, "overall"}
    assert report["summary"]["overall"]["samples"] == 3 * (2 * len(config.settings) - 1)
    # greedy decoding of the helpful policy gives its helpful answer
    assert "Happy to help" in report["prompts"][0]["results"][0]["outputs"][0]
    json_path, md_path = evaluate.write_report(report, tmp_path / "report.json")
    assert json.loads(json_path.read_text())["summary"] == report["summary"]
    markdown = md_path.read_text()
    assert "| greedy |" in markdown and "Tell me about cats." in markdown


@pytest.mark.slow  # the models fixture trains three tiny models
def test_reward_model_metrics_on_the_held_out_side(models: dict[str, Path]) -> None:
    held_out = evaluate.evaluate_reward_model(models["rm"], models["groups"])  # its own split settings
    card = json.loads((models["rm"] / "oasst_training.json").read_text())
    assert held_out["groups"] == card["data"]["eval_groups"]
    assert held_out["accuracy"] == pytest.approx(card["metrics"]["eval_accuracy"], abs=1e-3)
    assert held_out["accuracy"] > 0.5 and held_out["kendall_tau"] > 0
    everything = evaluate.evaluate_reward_model(models["rm"], models["groups"], split="all")
    assert everything["groups"] == 64


@pytest.mark.slow  # the models fixture trains three tiny models
def test_win_rate_of_a_model_against_itself_is_a_half(models: dict[str, Path]) -> None:
    result = evaluate.compare_models(
        models["good"], models["good"], models["rm"], prompts(4), max_new_tokens=12
    )
    assert result["rate"] == 0.5 and result["ties"] == 4
    sampled = evaluate.compare_models(
        models["bad"], models["bad"], models["rm"], prompts(4), params={"top_p": 0.9}, max_new_tokens=8
    )
    assert sampled["rate"] == 0.5  # same sampling seed, same replies


@pytest.mark.slow  # the models fixture trains three tiny models
def test_the_reward_model_prefers_the_helpful_policy(models: dict[str, Path]) -> None:
    result = evaluate.compare_models(
        models["good"], models["bad"], models["rm"], prompts(6), max_new_tokens=20
    )
    assert result["rate"] > 0.5
    assert result["mean_score_model"] > result["mean_score_baseline"]
    assert 0 <= result["low"] <= result["rate"] <= result["high"] <= 1
    assert len(result["examples"]) == 6


# --- the command line --------------------------------------------------------------------------------


@pytest.mark.slow
def test_oasst_eval_commands_run_end_to_end(models: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("Tell me about cats.\nTell me about tea.\n")
    config = tmp_path / "sampling.yaml"
    config.write_text(
        "max_new_tokens: 8\nsettings:\n  greedy: {do_sample: false}\n  hot: {temperature: 1.5}\n"
    )

    result = runner.invoke(
        app,
        ["eval", "sampling", "--model", str(models["good"]), "--prompts", str(prompt_file), "--config", str(config),
         "--reward-model", str(models["rm"]), "--out", str(tmp_path / "report.json")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["prompts"]) == 2 and report["summary"]["hot"]["mean_score"] is not None
    assert (tmp_path / "report.md").is_file()

    result = runner.invoke(
        app,
        ["eval", "rm", "--reward-model", str(models["rm"]), "--data", str(models["groups"]),
         "--out", str(tmp_path / "rm.json")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "kendall_tau" in result.output and json.loads((tmp_path / "rm.json").read_text())["accuracy"] > 0.5

    result = runner.invoke(
        app,
        ["eval", "winrate", "--model", str(models["good"]), "--baseline", str(models["bad"]),
         "--reward-model", str(models["rm"]), "--prompts", str(prompt_file), "--out", str(tmp_path / "win.json")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Win rate" in result.output and json.loads((tmp_path / "win.json").read_text())["rate"] > 0.5

    result = runner.invoke(
        app, ["eval", "rm", "--reward-model", str(tmp_path / "nowhere"), "--data", str(models["groups"])]
    )
    assert result.exit_code == 1 and "config.json" in result.output
