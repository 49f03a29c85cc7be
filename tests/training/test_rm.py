"""The reward model: the K-wise ranking loss, encoding, and training that ranks held-out replies right."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from oasst.training import rm  # noqa: E402
from oasst.training.common import ConfigError, build_config, read_model_card  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "oasst2_sample.trees.jsonl"
TOPICS = ["cats", "dogs", "rivers", "stars", "bread", "music", "trees", "trains", "clouds", "books", "tea"]


def synthetic_groups(n: int, seed: int) -> list[dict[str, Any]]:
    """Ranked groups where the better reply is learnable: helpful and long > curt > a bare refusal."""
    rng = random.Random(seed)
    groups = []
    for i in range(n):
        topic, other = rng.choice(TOPICS), rng.choice(TOPICS)
        replies = [
            f"Happy to help! {topic.capitalize()} are wonderful, here is a careful answer about {topic} and {other}.",
            f"{topic.capitalize()} are fine, I guess.",
            "No.",
        ]
        groups.append(
            {
                "prompt": [{"role": "user", "content": f"Tell me about {topic}."}],
                "replies": replies,
                "tree_id": f"synthetic-{seed}-{i}",
                "lang": "en",
            }
        )
    return groups


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from oasst.training.bootstrap import BootstrapConfig, bootstrap

    torch.set_num_threads(1)
    texts = [t for g in synthetic_groups(100, 99) for t in (*g["replies"], g["prompt"][0]["content"])]
    out = tmp_path_factory.mktemp("rm") / "tiny"
    return bootstrap(texts, BootstrapConfig(output_dir=str(out), vocab_size=600))


# --- the loss ----------------------------------------------------------------------------------------


def _nls(x: float) -> float:
    return -math.log(1 / (1 + math.exp(-x)))


def test_kwise_loss_equals_hand_computation_on_a_three_reply_group() -> None:
    s = [2.0, 0.5, -1.0]  # best first
    l2 = 0.01
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = sum(_nls(s[i] - s[j]) + l2 * 0.5 * (s[i] ** 2 + s[j] ** 2) for i, j in pairs) / 3
    got = rm.ranking_loss(torch.tensor(s), [0, 3], l2_coef=l2)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_kwise_loss_weighs_prompts_equally_unlike_flattened_pairs() -> None:
    scores = torch.tensor([1.0, 0.0, -1.0, -2.0, 3.0])  # a 3-reply group (3 pairs), a reversed 2-reply one
    kwise = float(rm.ranking_loss(scores, [0, 3, 5]))
    group_a = (_nls(1.0) + _nls(2.0) + _nls(1.0)) / 3
    group_b = _nls(-5.0)
    assert kwise == pytest.approx((group_a + group_b) / 2, rel=1e-6)
    flattened = (_nls(1.0) + _nls(2.0) + _nls(1.0) + group_b) / 4
    assert kwise != pytest.approx(flattened, rel=1e-3)  # the 2-reply prompt is not outvoted
    # with groups of two, every group is one pair and both agree
    pairs = torch.tensor([1.0, 0.0, -2.0, 3.0])
    assert float(rm.ranking_loss(pairs, [0, 2, 4])) == pytest.approx((_nls(1.0) + _nls(-5.0)) / 2, rel=1e-6)


def test_kwise_loss_pushes_the_better_reply_up() -> None:
    scores = torch.tensor([0.0, 0.0, 0.0], requires_grad=True)
    rm.ranking_loss(scores, [0, 3], l2_coef=0.001).backward()
    assert scores.grad is not None
    best, middle, worst = scores.grad.tolist()
    assert best < 0 < worst  # descending the gradient raises the best and lowers the worst
    assert middle == pytest.approx(0.0, abs=1e-6)


# --- data and encoding -------------------------------------------------------------------------------


def test_collator_flattens_groups_and_keeps_boundaries() -> None:
    batch = rm.RankingCollator(pad_token_id=1)([{"input_ids": [[5, 6, 7], [5]]}, {"input_ids": [[8, 9]] * 3}])
    assert batch["cu_lens"].tolist() == [0, 2, 5]
    assert batch["input_ids"].shape == (5, 3)
    assert batch["input_ids"][1].tolist() == [5, 1, 1]
    assert batch["attention_mask"][1].tolist() == [1, 0, 0]


def test_encode_reply_renders_the_chat_template_and_keeps_eos_when_cut(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    prompt = [{"role": "user", "content": "Tell me about cats. " * 20}]
    reply = "Cats are wonderful animals. " * 20
    full = tok.apply_chat_template([*prompt, {"role": "assistant", "content": reply}], tokenize=False)
    ids = rm.encode_reply(tok, prompt, reply, max_length=4096)
    assert tok.decode(ids) == full
    cut = rm.encode_reply(tok, prompt, reply, max_length=40, min_prefix_length=10)
    assert len(cut) == 40
    assert cut[-1] == tok.eos_token_id  # the score is read at the reply's eos
    assert tok.convert_tokens_to_ids("<|assistant|>") in cut


def test_load_examples_from_the_shared_export_matches_the_datasets_helper() -> None:
    if not SAMPLE.is_file():
        pytest.skip("the shared oasst2 sample is not here")
    from oasst.data import read_message_trees
    from oasst.training.datasets import TreeFilter, rm_records

    groups = rm.load_examples(SAMPLE, "rm", langs=["en"])
    expected = list(rm_records(read_message_trees(SAMPLE), TreeFilter(langs=frozenset({"en"}))))
    assert groups == expected and groups
    assert all(len(g["replies"]) >= 2 and g["lang"] == "en" for g in groups)


def test_bad_settings_and_inputs_are_refused(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_replies"):
        build_config(rm.RewardModelConfig, {"max_replies": 1})
    with pytest.raises(ConfigError, match="unknown setting"):
        build_config(rm.RewardModelConfig, {"l2": 0.1})
    with pytest.raises(FileNotFoundError, match="data file not found"):
        rm.run(rm.RewardModelConfig(model=str(tiny_model), data=[str(tmp_path / "missing.jsonl")]))
    data = write_jsonl(tmp_path / "groups.jsonl", synthetic_groups(4, 0))
    with pytest.raises(ValueError, match="no ranked groups"):
        rm.run(rm.RewardModelConfig(model=str(tiny_model), data=[str(data)], langs=["de"]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": [{"role": "user", "content": "x"}], "replies": ["only one"]}) + "\n")
    with pytest.raises(ValueError, match="at least two"):
        rm.load_examples(bad, "rm")


# --- training ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_rm(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("rm-train")
    cfg = rm.RewardModelConfig(
        model=str(tiny_model),
        data=[str(write_jsonl(folder / "train.jsonl", synthetic_groups(48, 1)))],
        eval_data=str(write_jsonl(folder / "val.jsonl", synthetic_groups(16, 2))),
        output_dir=str(folder / "rm"),
        max_steps=12,
        batch_size=8,
        learning_rate=1e-3,
        max_length=64,
        min_prefix_length=16,
        logging_steps=4,
    )
    yield rm.run(cfg)


def test_training_ranks_held_out_replies_better_than_the_untrained_head(trained_rm: Path) -> None:
    card = read_model_card(trained_rm)
    assert card is not None and card["kind"] == "rm"
    metrics = card["metrics"]
    assert metrics["eval_accuracy"] > metrics["initial_eval_accuracy"]
    assert metrics["eval_accuracy"] >= 0.9
    assert metrics["eval_kendall_tau"] > 0.5 and metrics["eval_spearman_rho"] > 0.5
    assert card["data"]["train_groups"] == 48 and card["data"]["eval_groups"] == 16


def test_saved_reward_model_loads_and_scores_the_better_reply_higher(trained_rm: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(trained_rm)
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None
    assert "<|assistant|>" in AutoTokenizer.from_pretrained(trained_rm).chat_template
    prompt = [{"role": "user", "content": "Tell me about music."}]
    good = "Happy to help! Music is wonderful, here is a careful answer about music and books."
    scores = rm.score(
        trained_rm,
        [
            [*prompt, {"role": "assistant", "content": good}],
            [*prompt, {"role": "assistant", "content": "No."}],
        ],
    )
    assert scores[0] > scores[1]
    with pytest.raises(ValueError, match="end with an assistant"):
        rm.score(trained_rm, [prompt])


@pytest.mark.slow
def test_trains_on_the_shared_export(tiny_model: Path, tmp_path: Path) -> None:
    if not SAMPLE.is_file():
        pytest.skip("the shared oasst2 sample is not here")
    cfg = rm.RewardModelConfig(
        model=str(tiny_model),
        data=[str(SAMPLE)],
        langs=["en"],
        output_dir=str(tmp_path / "rm"),
        max_steps=2,
        batch_size=2,
        max_length=96,
        min_prefix_length=32,
    )
    card = read_model_card(rm.run(cfg))
    assert card is not None
    groups = rm.load_examples(SAMPLE, "rm", langs=["en"])
    assert card["data"]["train_groups"] + card["data"]["eval_groups"] == len(groups)
    assert card["data"]["eval_groups"] > 0 and "eval_accuracy" in card["metrics"]
