"""The arithmetic of PPO (``oasst train ppo``), each piece small enough to test by hand: the adaptive KL
coefficient, masked statistics, whitening, reward clipping, generalised advantage estimation, and
per-token log-probabilities and entropy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "AdaptiveKLController",
    "clip_scores",
    "compute_gae",
    "entropy",
    "masked_mean",
    "token_logprobs",
    "whiten",
]


class AdaptiveKLController:
    """β of the KL penalty (Ziegler et al. 2019): proportional control toward a target KL per reply.

    ``target=None`` keeps β fixed.
    """

    def __init__(self, init: float, target: float | None, horizon: int) -> None:
        self.value = init
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        if self.target is None:
            return
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def whiten(values: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True) -> torch.Tensor:
    """Scale the masked entries to unit variance (and zero mean unless ``shift_mean`` is False)."""
    mean = masked_mean(values, mask)
    centred = (values - mean) * mask
    count = mask.sum()
    var = (centred**2).sum() / (count - 1).clamp(min=1)
    whitened = (values - mean) * (var + 1e-8).rsqrt()
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def clip_scores(scores: torch.Tensor, limit: float) -> torch.Tensor:
    return scores.clamp(-limit, limit)


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns) by generalised advantage estimation over each reply.

    Positions after a reply's end are masked: they have no value, so the last real token bootstraps from
    zero, as an episode end should.
    """
    import torch

    values = values * mask
    rewards = rewards * mask
    steps = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] if t + 1 < steps else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    return advantages * mask, (advantages + values) * mask


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    probs = logits.softmax(-1)
    return logits.logsumexp(-1) - (probs * logits).sum(-1)
