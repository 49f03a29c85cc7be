"""GRPO and RLOO (TRL) against the same reward model and prompts as PPO: they run, log the reward and
save a plain causal LM with the chat template."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from oasst.training.bootstrap import BootstrapConfig, bootstrap, texts_from_export
from oasst.training.common import ConfigError, build_config, read_model_card
from oasst.training.grpo import GrpoConfig, run
from oasst.training.rewards import token_share_reward_model

SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "oasst2_sample.trees.jsonl"
PROMPTS = ["Tell me about cats.", "What is the weather?", "Say something nice.", "Write a poem."]

# emitted inside transformers/TRL themselves (they still call the old gradient_checkpointing names)
pytestmark = pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.* is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("grpo")
    policy = bootstrap(
        texts_from_export(SAMPLE), BootstrapConfig(output_dir=str(root / "policy"), vocab_size=512)
    )
    tokenizer = AutoTokenizer.from_pretrained(policy)
    favoured = [i for i in range(len(tokenizer)) if i % 2 == 0 and i not in tokenizer.all_special_ids]
    reward_model = token_share_reward_model(policy, favoured, root / "rm")
    prompts = root / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": [{"role": "user", "content": p}]}) + "\n" for p in PROMPTS)
    )
    return {"policy": policy, "reward_model": reward_model, "prompts": prompts, "root": root}


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_runs_with_the_reward_model_and_saves(setup: dict[str, Path], algorithm: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = build_config(
        GrpoConfig,
        {
            "algorithm": algorithm,
            "model": str(setup["policy"]),
            "reward_model": str(setup["reward_model"]),
            "data": [str(setup["prompts"])],
            "output_dir": str(setup["root"] / algorithm),
            "max_steps": 3,
            "per_device_train_batch_size": 8,
            "num_generations": 4,
            "max_completion_length": 8,
            "learning_rate": 1e-3,
        },
    )
    out = run(cfg)
    card = read_model_card(out)
    assert card is not None and card["kind"] == algorithm
    metrics = card["metrics"]
    assert metrics["steps"] == 3
    # the reward model scored the samples: the share of favoured tokens, a positive number here
    assert math.isfinite(metrics["reward_first"]) and metrics["reward_first"] > 0
    assert math.isfinite(metrics["reward_last"])
    assert list((out / "runs").rglob("events.out.tfevents.*")), "no TensorBoard log"
    AutoModelForCausalLM.from_pretrained(out)
    assert "<|assistant|>" in AutoTokenizer.from_pretrained(out).chat_template


def test_bad_settings_are_refused(setup: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="algorithm"):
        build_config(GrpoConfig, {"algorithm": "ppo"})
    with pytest.raises(ConfigError, match="num_generations"):
        build_config(GrpoConfig, {"num_generations": 1})
    cfg = GrpoConfig(model=str(setup["policy"]), reward_model=str(setup["root"] / "nowhere"))
    with pytest.raises(FileNotFoundError, match="reward_model"):
        run(cfg)
