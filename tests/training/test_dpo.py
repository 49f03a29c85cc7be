"""DPO: pairs from rankings and preference JSONL, and training that prefers the chosen replies."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from oasst.training import dpo  # noqa: E402
from oasst.training.common import ConfigError, build_config, read_model_card  # noqa: E402
from oasst.training.rm import load_examples  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "oasst2_sample.trees.jsonl"
TOPICS = ["cats", "dogs", "rivers", "stars", "bread", "music", "trees", "trains", "clouds", "books", "tea"]
# transformers 5 renamed gradient checkpointing; TRL still uses the old names internally
TRL_DEPRECATIONS = "ignore:.*is deprecated and will be removed in v6:FutureWarning"


def synthetic_pairs(n: int, seed: int) -> list[dict[str, Any]]:
    """Chat-feedback style pairs (plain strings) where the chosen reply is learnably different."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        pairs.append(
            {
                "prompt": f"Tell me about {topic}.",
                "chosen": f"Happy to help! {topic.capitalize()} are wonderful.",
                "rejected": f"No. {topic} bore me.",
                "tree_id": f"pair-{seed}-{i}",
            }
        )
    return pairs


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from oasst.training.bootstrap import BootstrapConfig, bootstrap

    torch.set_num_threads(1)
    texts = [t for p in synthetic_pairs(100, 99) for t in (p["prompt"], p["chosen"], p["rejected"])]
    out = tmp_path_factory.mktemp("dpo") / "tiny"
    return bootstrap(texts, BootstrapConfig(output_dir=str(out), vocab_size=600))


def test_preference_jsonl_strings_become_conversations(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "feedback.jsonl", synthetic_pairs(3, 0))
    pairs = load_examples(path, "dpo")
    assert len(pairs) == 3
    assert pairs[0]["prompt"][0]["role"] == "user"
    assert pairs[0]["chosen"] == [{"role": "assistant", "content": synthetic_pairs(3, 0)[0]["chosen"]}]
    assert pairs[0]["lang"] == "und"  # no language given
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "hi", "chosen": "a"}) + "\n")
    with pytest.raises(ValueError, match="rejected"):
        load_examples(bad, "dpo")


def test_pairs_from_rankings_put_the_better_ranked_reply_first() -> None:
    if not SAMPLE.is_file():
        pytest.skip("the shared oasst2 sample is not here")
    from oasst.data import read_message_trees
    from oasst.training.datasets import dpo_records

    every = load_examples(SAMPLE, "dpo")
    assert every == list(dpo_records(read_message_trees(SAMPLE)))
    best = load_examples(SAMPLE, "dpo", pairing="best")
    assert 0 < len(best) < len(every)
    groups = {json.dumps(g["prompt"]): g["replies"] for g in load_examples(SAMPLE, "rm")}
    for pair in every[:50]:
        replies = groups[json.dumps(pair["prompt"])]
        assert replies.index(pair["chosen"][0]["content"]) < replies.index(pair["rejected"][0]["content"])


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="pairing"):
        build_config(dpo.DpoConfig, {"pairing": "adjacent"})
    with pytest.raises(ConfigError, match="beta"):
        build_config(dpo.DpoConfig, {"beta": 0})
    cfg = build_config(dpo.DpoConfig, {"loss_type": "sigmoid,sft", "data": "x.jsonl", "langs": "en"})
    assert cfg.loss_type == ["sigmoid", "sft"] and cfg.data == ["x.jsonl"] and cfg.langs == ["en"]


def test_log_prob_margin_is_zero_for_identical_replies(tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    pair = {
        "prompt": [{"role": "user", "content": "Tell me about tea."}],
        "chosen": [{"role": "assistant", "content": "Tea is nice."}],
        "rejected": [{"role": "assistant", "content": "Tea is nice."}],
    }
    assert dpo.preference_margins(model, tok, [pair]) == [pytest.approx(0.0, abs=1e-5)]
    assert dpo.completion_logprob(model, tok, pair["prompt"], pair["chosen"]) < 0


@pytest.mark.slow
@pytest.mark.filterwarnings(TRL_DEPRECATIONS)
def test_dpo_raises_the_held_out_margin_of_chosen_over_rejected(tiny_model: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = dpo.DpoConfig(
        model=str(tiny_model),
        data=[str(write_jsonl(tmp_path / "train.jsonl", synthetic_pairs(48, 1)))],
        eval_data=str(write_jsonl(tmp_path / "val.jsonl", synthetic_pairs(12, 2))),
        output_dir=str(tmp_path / "dpo"),
        max_steps=8,
        batch_size=8,
        learning_rate=1e-4,
        max_length=64,
        logging_steps=4,
    )
    out = dpo.run(cfg)
    card = read_model_card(out)
    assert card is not None and card["kind"] == "dpo"
    metrics = card["metrics"]
    assert metrics["eval_logp_margin"] > metrics["initial_eval_logp_margin"]
    assert metrics["eval_rewards/accuracies"] > 0.5
    assert metrics["eval_logp_accuracy"] > 0.5
    assert card["data"] == {"sources": cfg.data, "train_pairs": 48, "eval_pairs": 12}
    # a plain causal LM with the chat template, usable wherever the SFT model is
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert "<|prompter|>" in tok.chat_template
    val = load_examples(tmp_path / "val.jsonl", "dpo")
    assert sum(dpo.preference_margins(model, tok, val)) / len(val) == pytest.approx(
        metrics["eval_logp_margin"], rel=1e-3
    )
