"""``oasst train sft``: assistant-only labels, isolated packing, learning, LoRA merging, the CLI.

Every test trains the tiny bootstrapped model (a few seconds) on the shared oasst sample; one torch thread.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from oasst.data import read_message_trees  # noqa: E402
from oasst.data.prompt_format import CHAT_TEMPLATE  # noqa: E402
from oasst.training.bootstrap import BootstrapConfig, bootstrap, texts_from_export  # noqa: E402
from oasst.training.collators import PackedRowsCollator  # noqa: E402
from oasst.training.common import ConfigError, load_config, read_model_card  # noqa: E402
from oasst.training.datasets import sft_records  # noqa: E402
from oasst.training.datasets_io import write_records  # noqa: E402
from oasst.training.sft import SftConfig, build_trainer, load_model_and_tokenizer, run  # noqa: E402
from tests.conftest import sample_missing  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "oasst2_sample.trees.jsonl"
REPO = Path(__file__).resolve().parents[2]
EOS = "<|endoftext|>"

# peft reads a deprecated transformers property while wrapping the model (harmless, not ours)
PEFT_WARNING = "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"

CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Hi there, who are you?"},
    {"role": "assistant", "content": "A helpful assistant."},
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Two plus two is four."},
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SAMPLE.is_file():
        sample_missing(f"the oasst2 sample at {SAMPLE}")
    out = tmp_path_factory.mktemp("tiny")
    return bootstrap(texts_from_export(SAMPLE), BootstrapConfig(output_dir=str(out), vocab_size=1024))


@pytest.fixture(scope="module")
def records_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SFT records of the shared sample, as `oasst data convert` writes them."""
    path = tmp_path_factory.mktemp("data") / "sft.jsonl"
    write_records(path, sft_records(read_message_trees(SAMPLE)))
    return path


def settings(tiny_model: Path, data: list[Path], out: Path, **overrides: Any) -> SftConfig:
    values: dict[str, Any] = {
        "model": str(tiny_model),
        "data": [str(p) for p in data],
        "output_dir": str(out),
        "max_length": 96,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.0,
        "max_steps": 16,
        "per_device_train_batch_size": 8,
        "logging_steps": 2,
        "val_fraction": 0.2,
    }
    values.update(overrides)
    return SftConfig(**values)


# --- labels and packing ----------------------------------------------------------------------------


def _trainer(tiny_model: Path, tmp_path: Path, records: list[dict[str, Any]], **overrides: Any) -> Any:
    cfg = settings(tiny_model, [], tmp_path / "out", report_to=["none"], **overrides)
    model, tokenizer, added = load_model_and_tokenizer(cfg)
    return build_trainer(cfg, model, tokenizer, records, [], added)


def test_only_assistant_replies_and_their_eos_carry_labels(tiny_model: Path, tmp_path: Path) -> None:
    other = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"}]
    trainer = _trainer(tiny_model, tmp_path, [{"messages": CONVERSATION}, {"messages": other}])
    tokenizer = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    ids, labels, attention = batch["input_ids"][0], batch["labels"][0], batch["attention_mask"][0]

    labelled = labels != -100
    assert torch.equal(labels[labelled], ids[labelled])
    runs: list[list[int]] = []  # maximal stretches of labelled tokens
    for position in range(len(ids)):
        if labelled[position]:
            if position == 0 or not labelled[position - 1]:
                runs.append([])
            runs[-1].append(int(ids[position]))
    replies = [m["content"] + EOS for m in CONVERSATION if m["role"] == "assistant"]
    assert [tokenizer.decode(r) for r in runs] == replies
    unlabelled = tokenizer.decode(ids[~labelled & (attention == 1)])
    assert unlabelled == (
        "<|system|>Answer briefly." + EOS + "<|prompter|>Hi there, who are you?" + EOS + "<|assistant|>"
        "<|prompter|>What is two plus two?" + EOS + "<|assistant|>"
    )
    # the padding of the shorter conversation is never a target
    second = batch["labels"][1][batch["attention_mask"][1] == 0]
    assert second.numel() > 0 and bool((second == -100).all())


def test_assistant_only_loss_off_trains_every_token(tiny_model: Path, tmp_path: Path) -> None:
    trainer = _trainer(tiny_model, tmp_path, [{"messages": CONVERSATION}], assistant_only_loss=False)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    assert torch.equal(batch["labels"], batch["input_ids"])


PACKED_CONVERSATIONS = [
    CONVERSATION,
    [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}],
    [{"role": "user", "content": "Say something nice."}, {"role": "assistant", "content": "You matter."}],
    [
        {"role": "user", "content": "What do cats like to eat?"},
        {"role": "assistant", "content": "Most cats like fish and chicken."},
        {"role": "user", "content": "And dogs?"},
        {"role": "assistant", "content": "Dogs eat almost anything."},
    ],
    [{"role": "user", "content": "Count to three."}, {"role": "assistant", "content": "One, two, three."}],
]


def _segments(positions: Any) -> list[tuple[int, int]]:
    """(start, end) of every block of restarting positions in one row."""
    starts = (positions == 0).nonzero().flatten().tolist()
    return list(zip(starts, [*starts[1:], len(positions)], strict=True))


def _unpacked_labels(tiny_model: Path, tmp_path: Path, records: list[dict[str, Any]]) -> tuple[Any, dict]:
    """The unpacked trainer, and its per-token labels of every conversation, keyed by its token ids."""
    plain = _trainer(tiny_model, tmp_path, records)
    batch = plain.data_collator([plain.train_dataset[i] for i in range(len(records))])
    labels = {}
    for ids, mask, lab in zip(batch["input_ids"], batch["attention_mask"], batch["labels"], strict=True):
        labels[tuple(ids[mask == 1].tolist())] = lab[mask == 1]
    return plain, labels


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_rows_keep_conversations_apart(tiny_model: Path, tmp_path: Path, attention: str) -> None:
    """The default packing without FlashAttention: ``[batch, row]`` batches, positions restarting per
    conversation. Each conversation's logits are those it has alone; its labels are the unpacked ones."""
    records = [{"messages": c} for c in PACKED_CONVERSATIONS]
    packed = _trainer(
        tiny_model, tmp_path, records, packing=True, max_length=80, attn_implementation=attention
    )
    assert isinstance(packed.data_collator, PackedRowsCollator)
    rows = [packed.train_dataset[i] for i in range(len(packed.train_dataset))]
    assert len(rows) >= 2 and any(len(r["seq_lengths"]) > 1 for r in rows)
    batch = packed.data_collator(rows)
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == len(rows)
    assert len({len(r["input_ids"]) for r in rows}) > 1  # a shorter row is padded
    model = packed.model.eval()
    plain, unpacked_labels = _unpacked_labels(tiny_model, tmp_path, records)

    with torch.no_grad():
        together = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits
        # the check has teeth: the same rows with running positions let later conversations look back
        running = torch.arange(batch["input_ids"].shape[1]).expand_as(batch["input_ids"])
        leaky = model(input_ids=batch["input_ids"], position_ids=running, use_cache=False).logits
        seen = 0
        for index, row in enumerate(rows):
            segments = _segments(batch["position_ids"][index])
            assert [end - start for start, end in segments[: len(row["seq_lengths"])]] == row["seq_lengths"]
            for number, (start, end) in enumerate(segments[: len(row["seq_lengths"])]):
                ids = batch["input_ids"][index, start:end]
                alone = model(input_ids=ids[None], use_cache=False).logits[0]
                assert (together[index, start:end] - alone).abs().max() <= 1e-5
                if number > 0:
                    assert (leaky[index, start:end] - alone).abs().max() > 1e-3
                # the labels are the unpacked path's: assistant replies and their eos only
                assert torch.equal(batch["labels"][index, start:end], unpacked_labels[tuple(ids.tolist())])
                seen += 1
            assert bool((batch["labels"][index, sum(row["seq_lengths"]) :] == -100).all())  # padding
        assert seen == len(records)

        # so the packed loss is the loss of the same conversations padded in one batch
        padded = plain.data_collator([plain.train_dataset[i] for i in range(len(records))])
        packed_loss = packed.compute_loss(model, dict(batch))
        padded_loss = plain.compute_loss(plain.model.eval(), dict(padded))
    torch.testing.assert_close(packed_loss, padded_loss, atol=1e-5, rtol=1e-5)


def test_flash_attention_keeps_trls_flattened_packing(tiny_model: Path, tmp_path: Path) -> None:
    cfg = settings(tiny_model, [], tmp_path / "out", report_to=["none"], packing=True, max_length=256)
    model, tokenizer, added = load_model_and_tokenizer(cfg)
    model.config._attn_implementation = "flash_attention_2"  # only what the choice reads: no kernel on a CPU
    trainer = build_trainer(cfg, model, tokenizer, [{"messages": c} for c in PACKED_CONVERSATIONS], [], added)
    assert isinstance(trainer.data_collator, DataCollatorForLanguageModeling)
    assert trainer.data_collator.padding_free
    unpacked = _trainer(tiny_model, tmp_path, [{"messages": CONVERSATION}], packing=False)
    assert not isinstance(unpacked.data_collator, PackedRowsCollator)


def test_flattened_packing_keeps_conversations_apart(tiny_model: Path, tmp_path: Path) -> None:
    """TRL's padding-free layout (what FlashAttention gets), here under sdpa: one flattened sequence."""
    records = [{"messages": c} for c in PACKED_CONVERSATIONS[:3]]
    packed = _trainer(tiny_model, tmp_path, records, packing=True, max_length=256)
    assert len(packed.train_dataset) == 1  # all three share one row
    flatten = DataCollatorForLanguageModeling(
        pad_token_id=packed.data_collator.pad_token_id, padding_free=True
    )
    row = flatten([packed.train_dataset[0]])
    positions = row["position_ids"][0]
    segments = _segments(positions)
    assert len(segments) == 3

    model = packed.model.eval()
    tokenizer = packed.processing_class
    inputs = {k: v for k, v in row.items() if k != "labels"}
    with torch.no_grad():
        together = model(**inputs, use_cache=False).logits[0]  # what the trainer's forward computes
        for start, end in segments:
            alone = model(input_ids=row["input_ids"][:, start:end]).logits[0]
            torch.testing.assert_close(together[start:end], alone, atol=1e-4, rtol=1e-4)
        # the check has teeth: the same row with running positions lets later conversations look back
        running = model(input_ids=row["input_ids"], use_cache=False).logits[0]
        later = segments[1][0]
        assert not torch.allclose(running[later:], together[later:], atol=1e-3)

        # and the packed loss is the loss of the same conversations padded in one batch
        plain = _trainer(tiny_model, tmp_path, records)
        padded = plain.data_collator([plain.train_dataset[i] for i in range(3)])
        packed_loss = packed.compute_loss(model, dict(row))
        padded_loss = plain.compute_loss(plain.model.eval(), dict(padded))
    torch.testing.assert_close(packed_loss, padded_loss, atol=1e-4, rtol=1e-4)
    assert tokenizer.decode(row["input_ids"][0][row["labels"][0] != -100]).count(EOS) == 4


# --- training runs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tiny_model: Path, records_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sft") / "model"
    return run(settings(tiny_model, [records_file], out))


def test_training_lowers_the_loss_and_reports_eval_loss(trained: Path) -> None:
    card = read_model_card(trained)
    assert card is not None and card["kind"] == "sft"
    metrics = card["metrics"]
    assert metrics["steps"] == 16
    assert metrics["loss_last_logged"] < metrics["loss_first_logged"] - 0.5
    # held-out trees: better than where training started
    assert math.isfinite(metrics["eval_loss"]) and metrics["eval_loss"] < metrics["loss_first_logged"]
    assert card["data"]["train_conversations"] > 0 and card["data"]["validation_conversations"] > 0
    assert "eval_loss" in (trained / "README.md").read_text()
    assert list((trained / "runs").rglob("events.out.tfevents.*")), "no TensorBoard logs"


def test_output_dir_loads_and_chats_in_transformers(trained: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(trained)
    model = AutoModelForCausalLM.from_pretrained(trained)
    assert tokenizer.chat_template == CHAT_TEMPLATE
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is a cat?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    assert tokenizer.decode(prompt["input_ids"][0]) == "<|prompter|>What is a cat?" + EOS + "<|assistant|>"
    output = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert output.shape[1] > prompt["input_ids"].shape[1]


def test_the_inference_worker_serves_the_trained_directory(trained: Path) -> None:
    """What SFT wrote is what a worker serves: the engine answers through the stored chat template, and
    greedy decoding gives the same text as transformers' own generate on the same prompt."""
    import asyncio

    from oasst.inference.protocol import ChatTurn, Role, SamplingParameters, WorkRequest
    from oasst.inference.worker.engines import collect, make_engine

    engine = make_engine(model=str(trained), name="sft-test")
    request = WorkRequest(
        id="m1",
        model="sft-test",
        messages=[ChatTurn(role=Role.user, content="What is a cat?")],
        sampling=SamplingParameters(max_new_tokens=8, do_sample=False, temperature=0, repetition_penalty=1.0),
    )

    async def serve() -> str:
        await engine.start()
        try:
            text, _pieces, finished = await collect(engine, request)
        finally:
            await engine.aclose()
        assert finished.usage.completion_tokens >= 1
        return text

    served = asyncio.run(serve())
    tokenizer = AutoTokenizer.from_pretrained(trained)
    model = AutoModelForCausalLM.from_pretrained(trained)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is a cat?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    direct = tokenizer.decode(output[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert served == direct.split(EOS)[0]


def test_an_existing_model_is_not_overwritten_unasked(trained: Path, records_file: Path) -> None:
    before = (trained / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match=r"already holds a model.*overwrite=true"):
        run(SftConfig(model=str(trained), data=[str(records_file)], output_dir=str(trained)))
    assert (trained / "model.safetensors").read_bytes() == before


def test_overfits_one_conversation(tiny_model: Path, tmp_path: Path) -> None:
    """After many steps on one conversation, greedy decoding says the reply word for word, then stops."""
    conversation = [
        {"role": "user", "content": "What colour is the sky?"},
        {"role": "assistant", "content": "The sky is blue on a clear day."},
    ]
    data = tmp_path / "one.jsonl"
    write_records(data, [{"messages": conversation, "tree_id": "t", "lang": "en"}])
    cfg = settings(
        tiny_model,
        [data],
        tmp_path / "out",
        max_steps=40,
        learning_rate=3e-3,
        per_device_train_batch_size=1,
        val_fraction=0.0,
        report_to=["none"],
    )
    out = run(cfg)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    prompt = tokenizer.apply_chat_template(
        conversation[:1], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    output = model.generate(**prompt, max_new_tokens=24, do_sample=False)
    reply = tokenizer.decode(output[0][prompt["input_ids"].shape[1] :])
    assert reply == "The sky is blue on a clear day." + EOS
    assert "eval_loss" not in read_model_card(out)["metrics"]  # type: ignore[index]


@pytest.mark.filterwarnings(PEFT_WARNING)
def test_lora_is_merged_into_a_plain_model_dir(tiny_model: Path, records_file: Path, tmp_path: Path) -> None:
    cfg = settings(
        tiny_model,
        [records_file],
        tmp_path / "lora",
        lora=True,
        lora_r=4,
        lora_alpha=8,
        learning_rate=1e-2,
        max_steps=4,
        val_fraction=0.0,
        report_to=["none"],
    )
    out = run(cfg)
    assert not (out / "adapter_config.json").exists()
    assert not (out / "adapter_model.safetensors").exists()
    merged = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    merged_weights, base_weights = merged.state_dict(), base.state_dict()
    assert merged_weights.keys() == base_weights.keys()  # no lora_A / lora_B left
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(merged_weights[q], base_weights[q])
    embed = "model.embed_tokens.weight"  # not a LoRA target, and no token was added
    assert torch.equal(merged_weights[embed], base_weights[embed])
    metrics = read_model_card(out)["metrics"]  # type: ignore[index]
    assert metrics["trainable_parameters"] < metrics["parameters"] / 4


# --- settings and the command line -----------------------------------------------------------------


def test_unknown_or_bad_settings_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown setting.*learning_rat"):
        load_config(SftConfig, None, ["learning_rat=1e-4"])
    with pytest.raises(ConfigError, match="val_fraction"):
        load_config(SftConfig, None, ["val_fraction=1.5"])
    bad = tmp_path / "sft.yaml"
    bad.write_text("model: m\nloraa: true\n")
    with pytest.raises(ConfigError, match="loraa"):
        load_config(SftConfig, bad)


def test_bad_data_is_a_clear_error(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="set data="):
        run(SftConfig(model=str(tiny_model), output_dir=str(tmp_path / "o")))
    with pytest.raises(FileNotFoundError, match=r"missing\.jsonl"):
        run(settings(tiny_model, [tmp_path / "missing.jsonl"], tmp_path / "o"))
    other = tmp_path / "alpaca.jsonl"
    other.write_text(json.dumps({"instruction": "x", "output": "y"}) + "\n")
    with pytest.raises(ValueError, match="oasst data convert"):
        run(settings(tiny_model, [other], tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_shipped_configs_are_valid() -> None:
    for name in ("sft-tiny.yaml", "sft-example.yaml"):
        cfg = load_config(SftConfig, REPO / "configs" / "train" / name)
        assert cfg.data
    example = load_config(SftConfig, REPO / "configs" / "train" / "sft-example.yaml")
    assert example.lora and example.merge_lora and example.packing


def test_cli_trains_from_an_export(tiny_model: Path, tmp_path: Path) -> None:
    from oasst.cli.main import app

    out = tmp_path / "cli-sft"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "sft",
            "--config",
            str(REPO / "configs" / "train" / "sft-tiny.yaml"),
            f"model={tiny_model}",
            f"data=[{SAMPLE}]",
            f"output_dir={out}",
            "max_steps=4",
            "max_length=64",
            "packing=true",
            "langs=[en, es]",
            "report_to=[none]",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "model written to" in result.output
    card = read_model_card(out)
    assert card is not None and card["config"]["packing"] is True and card["config"]["langs"] == ["en", "es"]
    assert AutoTokenizer.from_pretrained(out).chat_template == CHAT_TEMPLATE

    result = CliRunner().invoke(app, ["train", "sft", f"model={tiny_model}", "learning_rat=1"])
    assert result.exit_code != 0 and "learning_rat" in result.output
