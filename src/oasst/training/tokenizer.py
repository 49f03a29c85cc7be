"""Give any tokenizer (and its model) the oasst prompt format: special tokens, chat template, embeddings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oasst.data.prompt_format import CHAT_TEMPLATE, SPECIAL_TOKENS

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PAD_MULTIPLE = 16  # embedding rows padded to a multiple of this (faster matmuls on GPUs)


def apply_prompt_format(
    tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | None = None
) -> PreTrainedTokenizerBase:
    """Add ``<|system|>``, ``<|prompter|>``, ``<|assistant|>`` (and a pad token if missing), set the chat
    template, and resize ``model``'s embeddings when the vocabulary grew. Idempotent."""
    missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens(
            {"additional_special_tokens": missing}, replace_extra_special_tokens=False
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.chat_template = CHAT_TEMPLATE
    if model is not None:
        resize_embeddings(tokenizer, model)
    return tokenizer


def resize_embeddings(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
    embeddings: Any = model.get_input_embeddings()
    current = int(embeddings.weight.shape[0])
    if len(tokenizer) > current:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=PAD_MULTIPLE)
    config: Any = model.config
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
