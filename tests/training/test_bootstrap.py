"""``oasst train bootstrap``: a tokenizer and tiny model that carry the oasst prompt format."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

torch = pytest.importorskip("torch")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from oasst.data.prompt_format import CHAT_TEMPLATE, SPECIAL_TOKENS, render  # noqa: E402
from oasst.training.bootstrap import BootstrapConfig, bootstrap, texts_from_export  # noqa: E402
from oasst.training.common import read_model_card  # noqa: E402
from tests.conftest import sample_missing  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "oasst2_sample.trees.jsonl"
EOS = "<|endoftext|>"


CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "¿Qué es un gato?"},
        {"role": "assistant", "content": "Un animal."},
        {"role": "user", "content": "Und auf Deutsch? 🐱"},
        {"role": "assistant", "content": "Eine Katze.\nMiau."},
    ],
    [{"role": "prompter", "content": "  spaces  and\ttabs "}],
]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    if not SAMPLE.is_file():
        sample_missing(f"the oasst2 sample at {SAMPLE}")
    return list(texts_from_export(SAMPLE))


@pytest.fixture(scope="module")
def model_dir(texts: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("boot") / "tiny"
    return bootstrap(
        texts, BootstrapConfig(output_dir=str(out), vocab_size=1024, pretrain_steps=8, pretrain_batch_size=8)
    )


def test_tokenizer_round_trips_every_sample_text(model_dir: Path, texts: list[str]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    for text in [*texts[:300], "Ünïcödé ✓ 漢字 🐱", "  leading and trailing  "]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token is None  # byte-level: nothing is unknown


def test_special_tokens_are_single_tokens(model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert tokenizer.eos_token == EOS and tokenizer.pad_token not in (None, EOS)
    for token in [*SPECIAL_TOKENS, EOS]:
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids[0]) == token
    ids = tokenizer("<|prompter|>Hi" + EOS + "<|assistant|>", add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|prompter|>")
    assert ids[-2:] == [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|assistant|>")]


def test_chat_template_renders_the_prompt_format(model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert tokenizer.chat_template == CHAT_TEMPLATE
    assert "{% generation %}" in tokenizer.chat_template  # what assistant-only SFT relies on
    for messages in CONVERSATIONS:
        for add in (False, True):
            shown = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add)
            assert shown == render(messages, EOS, add_generation_prompt=add)
    ids = tokenizer.apply_chat_template(CONVERSATIONS[1], tokenize=True, return_dict=True)["input_ids"]
    assert tokenizer.decode(ids) == render(CONVERSATIONS[1], EOS)


def test_model_loads_in_transformers_and_generates(model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.get_input_embeddings().weight.shape[0] >= len(tokenizer)
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    prompt = tokenizer.apply_chat_template(
        CONVERSATIONS[0][:1], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    output = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert output.shape[1] > prompt["input_ids"].shape[1]


def test_pretraining_lowers_the_loss_and_the_card_says_so(model_dir: Path) -> None:
    card = read_model_card(model_dir)
    assert card is not None and card["kind"] == "bootstrap"
    metrics = card["metrics"]
    assert 1_000_000 < metrics["parameters"] < 10_000_000
    assert metrics["pretrain_loss_last"] < metrics["pretrain_loss_first"]
    assert card["data"]["corpus_texts"] > 1000
    assert (model_dir / "README.md").is_file()


def test_cli_bootstraps_from_an_export_and_a_text_file(texts: list[str], tmp_path: Path) -> None:
    from oasst.cli.main import app

    extra = tmp_path / "lines.txt"
    extra.write_text("The first line.\n\nThe second line.\n", encoding="utf-8")
    out = tmp_path / "cli-tiny"
    result = CliRunner().invoke(
        app, ["train", "bootstrap", f"corpus=[{SAMPLE}, {extra}]", f"output_dir={out}", "vocab_size=512"]
    )
    assert result.exit_code == 0, result.output
    assert "model written to" in result.output
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == CHAT_TEMPLATE
    assert AutoModelForCausalLM.from_pretrained(out).config.vocab_size == len(tokenizer)
    assert read_model_card(out)["data"]["corpus_texts"] == len(texts) + 2  # type: ignore[index]


def test_cli_errors_say_what_to_do(tmp_path: Path) -> None:
    from oasst.cli.main import app

    runner = CliRunner()
    result = runner.invoke(app, ["train", "bootstrap", f"output_dir={tmp_path / 'x'}"])
    assert result.exit_code != 0 and "corpus=" in result.output
    result = runner.invoke(app, ["train", "bootstrap", f"corpus=[{tmp_path / 'nope.txt'}]"])
    assert result.exit_code != 0 and "nope.txt" in result.output
    result = runner.invoke(app, ["train", "bootstrap", "sise=small"])
    assert result.exit_code != 0 and "sise" in result.output
    assert not (tmp_path / "x").exists()
