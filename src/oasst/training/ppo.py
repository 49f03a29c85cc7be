"""``oasst train ppo``: PPO against a reward model, as one loop you can read top to bottom.

Each step:

1. **Rollout.** A batch of prompts (conversations ending with a user turn) is answered by the policy with
   plain sampling (temperature 1, no top-k/top-p cut), stopping at end-of-sequence.
2. **Reward.** The reward model scores each whole conversation; the score is clipped to ±``reward_clip``
   and put on the reply's last token. Every reply token also pays ``β·(log π(t) − log π_ref(t))``, its
   per-token KL to the frozen reference (the initial policy), so the policy cannot drift far to please an
   imperfect reward model. Optionally the per-token rewards are whitened (scaled to unit variance).
3. **Advantages.** A value head (one linear layer on the policy's last hidden state) estimates returns;
   GAE(γ, λ) turns rewards and values into advantages, which are whitened over the batch.
4. **PPO.** ``ppo_epochs`` passes over the batch in minibatches minimise the clipped policy-ratio loss
   plus ``vf_coef`` × the clipped value loss.
5. **Adaptive KL** (Ziegler et al. 2019): β moves toward the value that keeps the per-reply KL near
   ``target_kl``, by at most 20 % of ``batch/kl_horizon`` per step.

The defaults are those of the Open Assistant RLHF recipe (trlx PPO: KL 0.1 adaptive to 6 over 10000,
reward clip 4, γ 1, λ 0.95, clip ranges 0.4, value coefficient 1), with a learning rate for small models.

Everything goes through ``accelerate.Accelerator``, so the same code runs on one CPU, under
``accelerate launch`` on several processes (gloo on CPU, DDP on GPUs) or DeepSpeed ZeRO; each process
draws its own prompts. The saved directory is the policy alone, a plain causal LM with the chat template
(the value head is training scaffolding and is dropped). Metrics go to TensorBoard under
``output_dir/runs`` and to a progress bar.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oasst.training.ppo_math import (
    AdaptiveKLController,
    clip_scores,
    compute_gae,
    entropy,
    masked_mean,
    token_logprobs,
    whiten,
)

if TYPE_CHECKING:
    import torch

Message = dict[str, str]


@dataclass
class PPOConfig:
    """Settings of ``oasst train ppo``; every field can be set in YAML or as ``key=value``."""

    model: str = field(default="", metadata={"help": "The policy to start from: an SFT model directory."})
    reward_model: str = field(default="", metadata={"help": "Reward model directory (oasst train rm)."})
    data: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Prompt files: oasst exports (.jsonl[.gz] trees) or RL records (oasst data convert)."
        },
    )
    langs: list[str] | None = field(
        default=None, metadata={"help": "Exports only: languages of the prompts to keep (default all)."}
    )
    output_dir: str = field(default="models/ppo", metadata={"help": "Where the trained policy is written."})
    seed: int = field(default=0, metadata={"help": "Random seed (each process adds its rank)."})
    steps: int = field(default=200, metadata={"help": "PPO steps; each is one rollout batch."})
    batch_size: int = field(default=16, metadata={"help": "Prompts answered per step, per process."})
    mini_batch_size: int = field(default=4, metadata={"help": "Replies per optimiser step in PPO epochs."})
    ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout batch."})
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate (constant)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    max_prompt_length: int = field(
        default=256, metadata={"help": "Prompt tokens kept (oldest turns are cut first)."}
    )
    max_new_tokens: int = field(default=128, metadata={"help": "Longest reply sampled."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of rollouts."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling cut (0: none)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling cut (1: none)."})
    init_kl_coef: float = field(default=0.1, metadata={"help": "Initial KL penalty β."})
    target_kl: float | None = field(
        default=6.0, metadata={"help": "Per-reply KL the adaptive controller aims at; null keeps β fixed."}
    )
    kl_horizon: int = field(default=10000, metadata={"help": "Adaptive KL horizon (in replies)."})
    reward_clip: float = field(default=4.0, metadata={"help": "Reward model scores are clipped to ±this."})
    whiten_rewards: bool = field(
        default=False, metadata={"help": "Scale per-token rewards to unit variance before GAE."}
    )
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "Subtracted from the score of replies cut at max_new_tokens."}
    )
    gamma: float = field(default=1.0, metadata={"help": "GAE discount γ."})
    lam: float = field(default=0.95, metadata={"help": "GAE λ."})
    cliprange: float = field(default=0.4, metadata={"help": "PPO policy-ratio clip range."})
    cliprange_value: float = field(default=0.4, metadata={"help": "Value prediction clip range."})
    vf_coef: float = field(default=1.0, metadata={"help": "Weight of the value loss."})
    sample_every: int = field(
        default=0, metadata={"help": "Log one sampled reply as text every N steps (0: never)."}
    )

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.mini_batch_size < 1 or self.batch_size % self.mini_batch_size:
            raise ValueError("batch_size must be a positive multiple of mini_batch_size")
        if self.steps < 1 or self.ppo_epochs < 1 or self.max_new_tokens < 1:
            raise ValueError("steps, ppo_epochs and max_new_tokens must be at least 1")
        if self.target_kl is not None and self.target_kl <= 0:
            raise ValueError("target_kl must be positive (or null for a fixed β)")


CONFIG = PPOConfig


# --- the policy with its value head ----------------------------------------------------------------


def _value_head_module(policy: Any) -> Any:
    import torch

    class PolicyWithValueHead(torch.nn.Module):
        """The policy plus a scalar value per position, read from its last hidden state."""

        def __init__(self, policy: Any) -> None:
            super().__init__()
            self.policy = policy
            self.config = policy.config  # what DeepSpeed reads hidden sizes from
            hidden = policy.get_input_embeddings().embedding_dim
            self.value_head = torch.nn.Linear(hidden, 1)
            torch.nn.init.zeros_(self.value_head.weight)
            torch.nn.init.zeros_(self.value_head.bias)

        def forward(self, **inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.policy(**inputs, output_hidden_states=True, use_cache=False)
            hidden = out.hidden_states[-1]
            return out.logits, self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)

    return PolicyWithValueHead(policy)


# --- data ---------------------------------------------------------------------------------------------


def read_prompts(paths: list[str], langs: list[str] | None = None) -> list[list[Message]]:
    """The prompts of every file: oasst exports, RL records or one prompt per line (see
    `oasst.training.evaluate.load_prompts`), each a conversation ending with a user turn."""
    from oasst.training.evaluate import load_prompts

    if not paths:
        raise ValueError("set data=[FILE, ...]: oasst exports or RL prompt records")
    return [prompt for path in paths for prompt in load_prompts(path, langs=langs or ())]


def _encode_prompts(tokenizer: Any, prompts: list[list[Message]], max_length: int) -> list[list[int]]:
    encoded = []
    for messages in prompts:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        encoded.append(tokenizer(text, add_special_tokens=False)["input_ids"][-max_length:])
    return encoded


# --- rollout ----------------------------------------------------------------------------------------


@dataclass
class Rollout:
    """One batch of replies with everything PPO needs; ``mask`` marks reply tokens (eos included)."""

    input_ids: torch.Tensor  # prompt (left-padded) + reply
    attention_mask: torch.Tensor
    prompt_length: int
    mask: torch.Tensor  # [batch, reply length]
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor  # raw reward model scores
    ended: torch.Tensor  # replies that reached eos
    texts: list[str]

    @property
    def replies(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_length :]


def _model_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    # positions count real tokens only, as generate() does for left-padded prompts
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}


def _reply_logits(logits: torch.Tensor, prompt_length: int, temperature: float) -> torch.Tensor:
    return logits[:, prompt_length - 1 : -1] / temperature


def rollout(
    accelerator: Any,
    model: Any,
    ref_model: Any,
    reward_model: Any,
    tokenizer: Any,
    prompts: list[list[Message]],
    cfg: PPOConfig,
) -> Rollout:
    import torch

    device = accelerator.device
    encoded = _encode_prompts(tokenizer, prompts, cfg.max_prompt_length)
    width = max(len(ids) for ids in encoded)
    pad = tokenizer.pad_token_id
    prompt_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded], device=device)
    prompt_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], device=device)
    wrapped = accelerator.unwrap_model(model)
    with torch.no_grad(), accelerator.autocast():
        out = wrapped.policy.generate(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            generation_config=_generation_config(tokenizer, cfg),
        )
    replies = out[:, width:]
    is_eos = replies == tokenizer.eos_token_id
    ended = is_eos.any(-1)
    # reply tokens up to and including the first eos; anything after is padding
    mask = (is_eos.cumsum(-1) - is_eos.long()) == 0
    replies = replies.masked_fill(~mask, pad)
    input_ids = torch.cat([prompt_ids, replies], dim=1)
    attention_mask = torch.cat([prompt_mask, mask.long()], dim=1)
    inputs = _model_inputs(input_ids, attention_mask)
    with torch.no_grad(), accelerator.autocast():
        logits, values = wrapped(**inputs)
        logprobs = token_logprobs(_reply_logits(logits, width, cfg.temperature), replies)
        ref_logits = ref_model(**inputs, use_cache=False).logits
        ref_logprobs = token_logprobs(_reply_logits(ref_logits, width, cfg.temperature), replies)
    texts = tokenizer.batch_decode(replies, skip_special_tokens=True)
    conversations = [[*p, {"role": "assistant", "content": t}] for p, t in zip(prompts, texts, strict=True)]
    scores = torch.tensor(reward_model.score(conversations), device=device)
    mask_f = mask.float()
    return Rollout(
        input_ids=input_ids,
        attention_mask=attention_mask,
        prompt_length=width,
        mask=mask_f,
        logprobs=logprobs.float() * mask_f,
        ref_logprobs=ref_logprobs.float() * mask_f,
        values=values[:, width - 1 : -1].float() * mask_f,
        scores=scores,
        ended=ended,
        texts=texts,
    )


def _generation_config(tokenizer: Any, cfg: PPOConfig) -> Any:
    from transformers import GenerationConfig

    suppress = [tokenizer.pad_token_id] if tokenizer.pad_token_id != tokenizer.eos_token_id else None
    return GenerationConfig(
        do_sample=True,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        suppress_tokens=suppress,
    )


def _check_distributed(accelerator: Any, cfg: PPOConfig) -> None:
    """PPO keeps whole copies of the policy for generation and of the reference: DDP or ZeRO-2 only.

    Under DeepSpeed, the batch size and clipping that DeepSpeed's config leaves to "auto" are set here,
    since this loop has no dataloader for accelerate to read them from.
    """
    from accelerate.utils import DistributedType

    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if accelerator.distributed_type == DistributedType.FSDP or (
        plugin is not None and plugin.zero_stage == 3
    ):
        raise ValueError(
            "PPO runs under DDP or DeepSpeed ZeRO-0/1/2, not sharded weights (FSDP, ZeRO-3): launch it with "
            "configs/accelerate/ddp.yaml or deepspeed-zero2.yaml, or use `oasst train grpo`, which shards"
        )
    if plugin is not None:
        ds = plugin.deepspeed_config
        if ds.get("train_micro_batch_size_per_gpu", "auto") == "auto":
            ds["train_micro_batch_size_per_gpu"] = cfg.mini_batch_size
        if ds.get("gradient_clipping", "auto") == "auto":
            ds["gradient_clipping"] = cfg.max_grad_norm


# --- rewards and the PPO update ------------------------------------------------------------------------


def shape_rewards(batch: Rollout, beta: float, cfg: PPOConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token rewards, per-reply KL): −β·KL on every reply token, the clipped score on the last."""
    import torch

    scores = batch.scores
    if cfg.missing_eos_penalty is not None:
        scores = torch.where(batch.ended, scores, scores - cfg.missing_eos_penalty)
    kl = (batch.logprobs - batch.ref_logprobs) * batch.mask
    rewards = -beta * kl
    last = (batch.mask.sum(-1).long() - 1).clamp(min=0)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += clip_scores(scores, cfg.reward_clip)
    if cfg.whiten_rewards:
        rewards = whiten(rewards, batch.mask, shift_mean=False)
    return rewards, kl.sum(-1)


def ppo_update(
    accelerator: Any,
    model: Any,
    optimizer: Any,
    batch: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    cfg: PPOConfig,
    rng: random.Random,
) -> dict[str, float]:
    """``ppo_epochs`` passes over the batch in shuffled minibatches; returns the mean of each statistic."""
    stats: dict[str, list[float]] = {}
    size = batch.input_ids.shape[0]
    for _ in range(cfg.ppo_epochs):
        order = list(range(size))
        rng.shuffle(order)
        for start in range(0, size, cfg.mini_batch_size):
            idx = order[start : start + cfg.mini_batch_size]
            for key, value in _minibatch_step(
                accelerator, model, optimizer, batch, idx, advantages, returns, cfg
            ).items():
                stats.setdefault(key, []).append(value)
    return {key: sum(v) / len(v) for key, v in stats.items()}


def _minibatch_step(
    accelerator: Any,
    model: Any,
    optimizer: Any,
    batch: Rollout,
    idx: list[int],
    advantages: torch.Tensor,
    returns: torch.Tensor,
    cfg: PPOConfig,
) -> dict[str, float]:
    import torch

    mask = batch.mask[idx]
    inputs = _model_inputs(batch.input_ids[idx], batch.attention_mask[idx])
    with accelerator.autocast():
        logits, values = model(**inputs)
    logits = _reply_logits(logits.float(), batch.prompt_length, cfg.temperature)
    logprobs = token_logprobs(logits, batch.replies[idx])
    values = values[:, batch.prompt_length - 1 : -1].float()

    old_values, adv, ret = batch.values[idx], advantages[idx], returns[idx]
    values_clipped = old_values + (values - old_values).clamp(-cfg.cliprange_value, cfg.cliprange_value)
    value_loss = 0.5 * masked_mean(torch.max((values - ret) ** 2, (values_clipped - ret) ** 2), mask)

    log_ratio = logprobs - batch.logprobs[idx]
    ratio = log_ratio.exp()
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - cfg.cliprange, 1.0 + cfg.cliprange)
    policy_loss = masked_mean(torch.max(unclipped, clipped), mask)

    loss = policy_loss + cfg.vf_coef * value_loss
    accelerator.backward(loss)
    if cfg.max_grad_norm > 0:
        accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad()
    with torch.no_grad():
        return {
            "policy_loss": float(policy_loss),
            "value_loss": float(value_loss),
            "clipfrac": float(masked_mean((clipped > unclipped).float(), mask)),
            "approx_kl": float(masked_mean(0.5 * log_ratio**2, mask)),
            "entropy": float(masked_mean(entropy(logits), mask)),
        }


# --- the loop ---------------------------------------------------------------------------------------


def run(cfg: PPOConfig) -> Path:
    """Train the policy in ``cfg.model`` against ``cfg.reward_model``; save it to ``cfg.output_dir``."""
    import torch
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from oasst.training.callbacks import RichProgress
    from oasst.training.common import set_seed_and_threads
    from oasst.training.rm import RewardScorer
    from oasst.training.tokenizer import apply_prompt_format

    for name, where in (("model", cfg.model), ("reward_model", cfg.reward_model)):
        if not where or not (Path(where) / "config.json").is_file():
            raise FileNotFoundError(f"{name}: no model directory at {where or '(not set)'}")
    prompts = read_prompts(cfg.data, cfg.langs)

    # cpu=True on a machine without GPUs: processes started by torchrun then pair up over gloo
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    _check_distributed(accelerator, cfg)
    set_seed_and_threads(cfg.seed + accelerator.process_index)
    rng = random.Random(cfg.seed + accelerator.process_index)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    policy = AutoModelForCausalLM.from_pretrained(cfg.model)
    apply_prompt_format(tokenizer, policy)
    ref_model = copy.deepcopy(policy).requires_grad_(False).eval().to(accelerator.device)
    reward_model = RewardScorer.load(
        cfg.reward_model, batch_size=cfg.batch_size, device=str(accelerator.device)
    )
    model = _value_head_module(policy)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.95))
    model, optimizer = accelerator.prepare(model, optimizer)
    model.eval()  # no dropout: rollout and update must see the same policy
    kl_ctl = AdaptiveKLController(cfg.init_kl_coef, cfg.target_kl, cfg.kl_horizon)
    writer = _tensorboard(Path(cfg.output_dir) / "runs") if accelerator.is_main_process else None
    history: list[dict[str, float]] = []

    with RichProgress("PPO", cfg.steps) if accelerator.is_main_process else _Quiet() as bar:
        for step in range(1, cfg.steps + 1):
            batch_prompts = [rng.choice(prompts) for _ in range(cfg.batch_size)]
            batch = rollout(accelerator, model, ref_model, reward_model, tokenizer, batch_prompts, cfg)
            rewards, kl = shape_rewards(batch, kl_ctl.value, cfg)
            advantages, returns = compute_gae(rewards, batch.values, batch.mask, cfg.gamma, cfg.lam)
            advantages = whiten(advantages, batch.mask)
            update = ppo_update(accelerator, model, optimizer, batch, advantages, returns, cfg, rng)
            local = {
                "score": float(batch.scores.mean()),
                "reward": float(rewards.sum(-1).mean()),
                "kl": float(kl.mean()),
                "reply_length": float(batch.mask.sum(-1).mean()),
                "ended": float(batch.ended.float().mean()),
                **update,
            }
            metrics = _mean_over_processes(accelerator, local)
            metrics["beta"] = kl_ctl.value
            kl_ctl.update(metrics["kl"], cfg.batch_size * accelerator.num_processes)
            history.append(metrics)
            if writer is not None:
                for key, value in metrics.items():
                    writer.add_scalar(f"ppo/{key}", value, step)
                if cfg.sample_every and step % cfg.sample_every == 0:
                    writer.add_text("ppo/sample", batch.texts[0], step)
            bar.update(step, {k: metrics[k] for k in ("score", "kl", "beta", "policy_loss")})
    if writer is not None:
        writer.close()
    return _save(accelerator, model, tokenizer, cfg, history)


def _mean_over_processes(accelerator: Any, local: dict[str, float]) -> dict[str, float]:
    import torch

    values = torch.tensor(list(local.values()), device=accelerator.device)
    reduced = accelerator.reduce(values, reduction="mean") if accelerator.num_processes > 1 else values
    return {key: float(v) for key, v in zip(local, reduced.tolist(), strict=True)}


def _save(
    accelerator: Any, model: Any, tokenizer: Any, cfg: PPOConfig, history: list[dict[str, float]]
) -> Path:
    from oasst.training.common import write_model_card

    out = Path(cfg.output_dir)
    accelerator.wait_for_everyone()
    state = accelerator.get_state_dict(model)  # gathers sharded weights; every process must call it
    if accelerator.is_main_process:
        policy_state = {k.removeprefix("policy."): v for k, v in state.items() if k.startswith("policy.")}
        accelerator.unwrap_model(model).policy.save_pretrained(out, state_dict=policy_state)
        tokenizer.save_pretrained(out)
        write_model_card(
            out,
            kind="ppo",
            base_model=cfg.model,
            data={"prompt_files": ", ".join(cfg.data), "reward_model": cfg.reward_model},
            config=asdict(cfg),
            metrics=_summary(history, accelerator.num_processes * cfg.batch_size),
        )
    accelerator.wait_for_everyone()
    # The process group stays open on purpose. Destroying it here would leave the DDP wrapper holding
    # its last reference, and releasing the wrapper on return would run gloo's destructor, which joins
    # its worker thread with the GIL held while that thread may still be freeing the final barrier's
    # tensors and waiting for the GIL: a deadlock seen under load with torch 2.13. The `oasst train`
    # command leaves distributed runs with os._exit once every rank is here.
    return out


def _summary(history: list[dict[str, float]], replies_per_step: int) -> dict[str, float]:
    """First and last tenth of the run, so a reader sees where the score went."""
    span = max(1, math.ceil(len(history) / 10))

    def mean(rows: list[dict[str, float]], key: str) -> float:
        return round(sum(r[key] for r in rows) / len(rows), 4)

    first, last = history[:span], history[-span:]
    return {
        "steps": len(history),
        "replies": len(history) * replies_per_step,
        "score_first": mean(first, "score"),
        "score_last": mean(last, "score"),
        "kl_last": mean(last, "kl"),
        "beta_last": round(history[-1]["beta"], 6),
        "entropy_last": mean(last, "entropy"),
    }


def _tensorboard(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: metrics still reach the progress bar and model card
        return None
    return SummaryWriter(log_dir=str(log_dir))


class _Quiet:
    """The progress bar of processes other than the first: does nothing."""

    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, completed: int, metrics: dict[str, float] | None = None) -> None:
        return None
