"""Collators for oasst's trainers.

`PackedRowsCollator` batches the rows that TRL's best-fit-decreasing packing builds (each row holds several
whole conversations and lists their lengths in ``seq_lengths``) for models whose attention is not
FlashAttention. TRL's own collator for packed rows is padding-free: it concatenates the whole batch into one
sequence, which FlashAttention's varlen kernels handle well, but for which transformers gives sdpa and eager
attention one block-diagonal mask over all of it, (batch × row)² entries of attention. Kept as
``[batch, row]``, each row gets its own block-diagonal mask: batch × row² entries, the same tokens, labels and
loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class PackedRowsCollator:
    """Packed rows as a ``[batch, longest row]`` batch with ``position_ids`` that restart at every conversation.

    No ``attention_mask`` is returned: from the restarting positions transformers (``masking_utils``) builds a
    causal mask that is block-diagonal within each row, so no conversation attends to another. Shorter rows
    are padded with ``pad_token_id``; the padding forms a block of its own (its positions count from 0 again)
    and carries no label. The first token of every conversation carries no label either: it would be predicted
    from the end of the conversation before it. Examples without ``seq_lengths`` (an unpacked evaluation set)
    count as one conversation each.
    """

    pad_token_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(example["input_ids"]) for example in examples)
        input_ids, labels, position_ids = [], [], []
        for example in examples:
            ids = list(example["input_ids"])
            lengths = example.get("seq_lengths") or [len(ids)]
            if sum(lengths) != len(ids):
                raise ValueError(f"seq_lengths {lengths} do not add up to the {len(ids)} tokens of the row")
            extra = width - len(ids)
            positions = [i for length in [*lengths, extra] for i in range(length)]
            targets = [*example.get("labels", ids), *[-100] * extra]
            input_ids.append([*ids, *[self.pad_token_id] * extra])
            labels.append([-100 if p == 0 else t for p, t in zip(positions, targets, strict=True)])
            position_ids.append(positions)
        return {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "position_ids": torch.tensor(position_ids, dtype=torch.long),
        }


def uses_flash_attention(model: Any) -> bool:
    """Whether ``model`` (or the model a peft wrapper holds) attends with a FlashAttention kernel."""
    config = getattr(model, "config", None)
    implementation = getattr(config, "_attn_implementation", None) or ""
    return "flash" in str(implementation)
