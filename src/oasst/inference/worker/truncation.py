"""Fit a conversation into the model's context.

Whole turns are dropped, oldest first and a user/assistant pair at a time, so the model never sees a
message cut in the middle (the original worker cut tokens from the left and could start mid-message).
The system prompt and the last user turn are always kept; only when those two alone do not fit is the
last user turn cut, from its start, so that its end — the question — survives.

Room is reserved for the answer: ``min(max_new_tokens, context_length // 2)`` tokens, so a long history
never leaves the model no room to answer. ``max_new_tokens`` is then clamped to what the context has left.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from oasst.inference.protocol import ChatTurn, Role

__all__ = ["ContextTooLong", "Fitted", "fit_to_context"]

CountTokens = Callable[[Sequence[ChatTurn]], int]  # prompt tokens of the rendered conversation
KeepLastTokens = Callable[[str, int], str]  # the text cut to its last n tokens


class ContextTooLong(ValueError):
    """Even the system prompt and the last user turn leave no room to answer."""


@dataclass(frozen=True)
class Fitted:
    messages: list[ChatTurn]
    prompt_tokens: int
    max_new_tokens: int
    dropped_turns: int = 0
    cut_last_turn: bool = False


def fit_to_context(
    messages: Sequence[ChatTurn],
    count_tokens: CountTokens,
    *,
    context_length: int,
    max_new_tokens: int,
    keep_last_tokens: KeepLastTokens | None = None,
) -> Fitted:
    """The newest turns that fit ``context_length`` with room for the answer (see the module docstring).

    Without ``keep_last_tokens`` a last user turn that is too long on its own is an error.
    """
    if not messages:
        raise ValueError("a conversation needs at least one message")
    system = [messages[0]] if messages[0].role == Role.system else []
    turns = list(messages[len(system) :])
    if not turns:
        raise ValueError("a conversation needs a user turn after the system prompt")
    reserve = max(1, min(max_new_tokens, context_length // 2))
    budget = context_length - reserve

    # Candidate starts: each user turn (dropping everything before it), never past the last turn.
    starts = [0] + [i for i, t in enumerate(turns) if i > 0 and t.role == Role.user]
    prompt = count_tokens([*system, *turns])
    start = 0
    if prompt > budget:
        # Fewer tokens the more turns are dropped: binary search the first start that fits.
        lo, hi = 1, len(starts) - 1
        start, prompt = starts[-1], count_tokens([*system, *turns[starts[-1] :]])
        while lo <= hi and prompt <= budget:
            mid = (lo + hi) // 2
            tokens = count_tokens([*system, *turns[starts[mid] :]])
            if tokens <= budget:
                start, prompt = starts[mid], tokens
                hi = mid - 1
            else:
                lo = mid + 1
    kept = [*system, *turns[start:]]
    cut = False
    if prompt > budget:
        kept, prompt = _cut_last_turn(kept, count_tokens, budget, keep_last_tokens)
        cut = True
    room = context_length - prompt
    if room < 1:
        raise ContextTooLong(f"the prompt needs {prompt} tokens; the model's context is {context_length}")
    return Fitted(
        messages=kept,
        prompt_tokens=prompt,
        max_new_tokens=min(max_new_tokens, room),
        dropped_turns=start,
        cut_last_turn=cut,
    )


def _cut_last_turn(
    kept: list[ChatTurn], count_tokens: CountTokens, budget: int, keep_last_tokens: KeepLastTokens | None
) -> tuple[list[ChatTurn], int]:
    """Only the system prompt and the last turn are left and still too long: cut the last turn's start."""
    head, last = kept[:-1], kept[-1]
    overhead = count_tokens([*head, ChatTurn(role=last.role, content="")])
    allowed = budget - overhead
    if keep_last_tokens is None or allowed < 1:
        what = "the system prompt" if allowed < 1 and head else "the last message"
        raise ContextTooLong(
            f"{what} is too long: the prompt may use {budget} tokens of the model's context "
            "(the rest is kept for the answer)"
        )
    # Token counts of a cut text can shift by a token or two at the cut; shrink until it fits.
    for _ in range(8):
        trimmed = [*head, ChatTurn(role=last.role, content=keep_last_tokens(last.content, allowed))]
        prompt = count_tokens(trimmed)
        if prompt <= budget:
            return trimmed, prompt
        allowed -= max(1, prompt - budget)
        if allowed < 1:
            break
    raise ContextTooLong("the last message cannot be cut to fit the model's context")
