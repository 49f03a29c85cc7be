"""Every trainer runs under ``accelerate launch`` unchanged: here two CPU processes talking over gloo
(configs/accelerate/cpu-2proc.yaml), through the ``oasst`` command line as a user would launch it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from oasst.training.bootstrap import BootstrapConfig, bootstrap, texts_from_export
from oasst.training.common import read_model_card
from oasst.training.rewards import token_share_reward_model

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT.parent / "shared" / "data" / "oasst2_sample.trees.jsonl"
ACCELERATE_CONFIG = ROOT / "configs" / "accelerate" / "cpu-2proc.yaml"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("distributed")
    policy = bootstrap(
        texts_from_export(SAMPLE), BootstrapConfig(output_dir=str(root / "policy"), vocab_size=512)
    )
    tokenizer = AutoTokenizer.from_pretrained(policy)
    favoured = [i for i in range(len(tokenizer)) if i % 2 == 0 and i not in tokenizer.all_special_ids]
    token_share_reward_model(policy, favoured, root / "rm")
    prompts = root / "prompts.jsonl"
    conversations = root / "sft.jsonl"
    lines = ["Tell me about cats.", "Name a colour.", "Write a poem.", "Count to three."]
    prompts.write_text(
        "".join(json.dumps({"prompt": [{"role": "user", "content": t}]}) + "\n" for t in lines)
    )
    conversations.write_text(
        "".join(
            json.dumps(
                {"messages": [{"role": "user", "content": t}, {"role": "assistant", "content": t[::-1]}]}
            )
            + "\n"
            for t in lines * 8
        )
    )
    return {"policy": policy, "rm": root / "rm", "prompts": prompts, "sft": conversations, "root": root}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(*args: str) -> subprocess.CompletedProcess[str]:
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [
        str(accelerate),
        "launch",
        "--config_file",
        str(ACCELERATE_CONFIG),
        "--main_process_port",
        str(_free_port()),
        "-m",
        "oasst.cli.main",
        "train",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def test_ppo_on_two_processes(setup: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM

    out = setup["root"] / "ppo"
    _launch(
        "ppo",
        f"model={setup['policy']}",
        f"reward_model={setup['rm']}",
        f"data=[{setup['prompts']}]",
        f"output_dir={out}",
        "steps=3",
        "batch_size=4",
        "mini_batch_size=2",
        "ppo_epochs=1",
        "max_new_tokens=8",
    )
    metrics = (read_model_card(out) or {})["metrics"]
    assert metrics["replies"] == 3 * 4 * 2  # both processes answered their own prompts
    AutoModelForCausalLM.from_pretrained(out)


def test_sft_on_two_processes(setup: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = setup["root"] / "sft"
    _launch(
        "sft",
        f"model={setup['policy']}",
        f"data=[{setup['sft']}]",
        f"output_dir={out}",
        "max_steps=4",
        "per_device_train_batch_size=4",
        "max_length=64",
        "val_fraction=0",
        "learning_rate=0.001",
        "report_to=[none]",
    )
    assert (read_model_card(out) or {})["kind"] == "sft"
    AutoModelForCausalLM.from_pretrained(out)
    assert "<|assistant|>" in AutoTokenizer.from_pretrained(out).chat_template
