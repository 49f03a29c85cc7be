"""A reward model with a known answer, for checking that an RL setup learns at all.

`token_share_reward_model` writes a reward model directory (an ordinary one-label
``AutoModelForSequenceClassification`` with the policy's tokenizer and chat template) whose score is the
share of tokens in the conversation that belong to a chosen set. Nothing is trained, so the reward is
exact and known in advance: a cheap check that PPO, GRPO or RLOO raise the reward before spending hours on
a real reward model, and what the RL tests train against.

Scoring conversations with any reward model directory is `oasst.training.rm.RewardScorer`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["token_share_reward_model"]


def token_share_reward_model(
    policy_dir: str | Path, favoured_tokens: Iterable[int], output_dir: str | Path, *, scale: float = 4.0
) -> Path:
    """Write a reward model whose score grows with the share of ``favoured_tokens`` in the conversation.

    It is a one-layer model of the policy's architecture and vocabulary with hand-set weights: uniform
    attention averages one embedding feature that is ``scale`` for favoured tokens and 0 otherwise, and
    the score head reads that average. Nothing is trained, so the reward is exact and known in advance.
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    config = AutoConfig.from_pretrained(policy_dir)
    config.num_hidden_layers = 1
    config.num_labels = 1
    config.pad_token_id = tokenizer.pad_token_id
    config.tie_word_embeddings = False
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    feature = 0  # the hidden dimension that carries "is favoured"
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        embed = model.get_input_embeddings().weight
        embed[:, 1:] = 1.0  # a constant background so the normalisations stay well defined
        embed[list(favoured_tokens), feature] = scale
        layer = model.model.layers[0]
        layer.input_layernorm.weight.fill_(1.0)
        layer.post_attention_layernorm.weight.fill_(1.0)
        model.model.norm.weight.fill_(1.0)
        # q = k = 0: every position attends equally to all before it, so the output is a mean
        layer.self_attn.v_proj.weight[feature, feature] = 1.0
        layer.self_attn.o_proj.weight[feature, feature] = 1.0
        model.score.weight[0, feature] = 1.0
    out = Path(output_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
