"""``oasst train bootstrap``: a tiny model from nothing — a byte-level BPE tokenizer trained on a corpus and a
small randomly initialised Llama-style model with the oasst chat template, saved as a Hugging Face
directory. It is the embedded default of ``oasst up`` and what the tests train, since no model hub is
reachable; any Hugging Face causal LM directory works in its place.

Optionally (``pretrain_steps``) the model first reads the corpus as plain language modelling, so that it
produces words rather than noise before SFT.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from oasst.data.prompt_format import SPECIAL_TOKENS

EOS = "<|endoftext|>"
PAD = "<|pad|>"

SIZES: dict[str, dict[str, int]] = {
    # hidden, intermediate, layers, heads: ~3 M and ~26 M parameters with a 4k vocabulary
    "tiny": {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 4},
    "small": {
        "hidden_size": 512,
        "intermediate_size": 1408,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
    },
}


@dataclass
class BootstrapConfig:
    """How to build the model. Every field can be set in YAML or as ``key=value`` on the command line."""

    corpus: list[str] = field(
        default_factory=list, metadata={"help": "oasst exports (.jsonl[.gz]) or text files to learn from."}
    )
    output_dir: str = field(default="models/tiny", metadata={"help": "Where the model directory is written."})
    size: str = field(default="tiny", metadata={"help": "tiny (~3M parameters) or small (~26M)."})
    vocab_size: int = field(default=4096, metadata={"help": "BPE vocabulary size (special tokens included)."})
    min_frequency: int = field(default=2, metadata={"help": "Minimum pair frequency for a BPE merge."})
    max_length: int = field(default=512, metadata={"help": "Context length (position embeddings)."})
    pretrain_steps: int = field(
        default=0, metadata={"help": "Language-modelling steps on the corpus (0: none)."}
    )
    pretrain_batch_size: int = 16
    pretrain_lr: float = 3e-3
    seed: int = 0


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int, max_length: int) -> Any:
    """A byte-level BPE tokenizer (no unknown tokens: every byte is in the alphabet) with the oasst format."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from oasst.training.tokenizer import apply_prompt_format

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS, PAD, *SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=max_length,
        additional_special_tokens=list(SPECIAL_TOKENS),
    )
    return apply_prompt_format(tokenizer)


def build_model(tokenizer: Any, size: str, max_length: int, seed: int) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}: choose one of {', '.join(SIZES)}")
    torch.manual_seed(seed)
    dims: dict[str, Any] = SIZES[size]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_length,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **dims,
    )
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def pretrain(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    cfg: BootstrapConfig,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """A few steps of plain language modelling on the corpus; returns the loss per step."""
    import torch

    rng = random.Random(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr)
    model.train()
    losses: list[float] = []
    for step in range(cfg.pretrain_steps):
        batch_texts = [rng.choice(texts) + tokenizer.eos_token for _ in range(cfg.pretrain_batch_size)]
        batch = tokenizer(batch_texts, return_tensors="pt", padding=True, truncation=True, max_length=128)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step + 1, losses[-1])
    model.eval()
    return losses


def bootstrap(
    texts: Iterable[str],
    cfg: BootstrapConfig,
    on_step: Callable[[int, float], None] | None = None,
) -> Path:
    """Train the tokenizer on ``texts``, build (and optionally pre-train) the model, save both to
    ``cfg.output_dir`` with a model card. Returns the directory."""
    corpus = [t for t in texts if t and t.strip()]
    if not corpus:
        raise ValueError("the corpus is empty: give texts to train the tokenizer on")
    tokenizer = train_tokenizer(corpus, cfg.vocab_size, cfg.min_frequency, cfg.max_length)
    model = build_model(tokenizer, cfg.size, cfg.max_length, cfg.seed)
    losses = pretrain(model, tokenizer, corpus, cfg, on_step) if cfg.pretrain_steps else []
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    from oasst.training.common import write_model_card

    metrics: dict[str, Any] = {"parameters": sum(p.numel() for p in model.parameters())}
    if losses:
        metrics.update(pretrain_loss_first=round(losses[0], 4), pretrain_loss_last=round(losses[-1], 4))
    write_model_card(
        out,
        kind="bootstrap",
        base_model=None,
        data={"corpus_texts": len(corpus)},
        config=asdict(cfg),
        metrics=metrics,
    )
    return out


def texts_from_export(path: Path) -> Iterator[str]:
    """Every message text of an oasst export (trees or flat messages, .jsonl or .jsonl.gz)."""
    from oasst.data import iter_messages, read_message_trees

    for tree in read_message_trees(path):
        for message in iter_messages(tree):
            yield message.text


CONFIG = BootstrapConfig


def run(cfg: BootstrapConfig) -> Path:
    """``oasst train bootstrap``: the corpus is ``corpus`` (an oasst export or text files, one text a line)."""
    from oasst.training.callbacks import RichProgress

    sources = [Path(p) for p in cfg.corpus]
    if not sources:
        raise ValueError("set corpus=[FILE, ...]: an oasst export (.jsonl/.jsonl.gz) or text files")
    for source in sources:
        if not source.is_file():
            raise FileNotFoundError(f"corpus file not found: {source}")
    texts = [text for source in sources for text in _texts(source)]
    from oasst.training.common import set_seed_and_threads

    set_seed_and_threads(cfg.seed)
    with RichProgress("pre-training", cfg.pretrain_steps or None) as bar:
        return bootstrap(texts, cfg, on_step=lambda step, loss: bar.update(step, {"loss": loss}))


def _texts(source: Path) -> Iterator[str]:
    if source.name.endswith((".jsonl", ".jsonl.gz")):
        yield from texts_from_export(source)
    else:
        yield from (line.strip() for line in source.read_text(encoding="utf-8").splitlines() if line.strip())
