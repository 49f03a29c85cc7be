"""Token-by-token decoding for the transformers engine: one request's state, and the batch loop.

:class:`Generation` is what ``model.generate`` does for one sequence after each forward pass — the logits
processors, argmax or a seeded draw, stop tokens and stop strings, incremental detokenising — so that
the engine owns exact stop, cancel and usage semantics.

:class:`BatchLoop` runs many sequences in one thread with **one forward pass per step for all of them**
(continuous batching): a new request is prefilled alone, its KV cache joins the batch's (left-padded to
a common length, with an attention mask and per-row positions), and a finished or cancelled request
leaves it at once. On a CPU that turns eight threads fighting over the GIL and the cores into one
matrix product per layer; on a GPU it turns eight streams of tiny kernel launches into one. Only models
whose cache is the plain per-layer key/value kind can be batched this way (:func:`batchable`); others
keep the one-thread-per-request loop.

Every request keeps its own random generator, so a seeded request draws the same tokens alone or in a
batch (up to floating-point differences between batched and single matrix products, which can flip a
draw only when it lands within rounding of a boundary).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from oasst.inference.protocol import FinishReason, SamplingParameters, Usage
from oasst.inference.worker.engines import Finished, GenerationEvent, StopBuffer

if TYPE_CHECKING:
    import torch

__all__ = [
    "BatchLoop",
    "Detokenizer",
    "Generation",
    "Relay",
    "RelayHub",
    "batchable",
    "logits_processors",
]

log = logging.getLogger(__name__)

Emit = Callable[[GenerationEvent | BaseException], None]


class Detokenizer:
    """Incremental decoding that gives the same text as decoding all ids at once.

    A piece is released only once it is stable: decoded with a few tokens of left context (so tokenizers
    that mark word starts, like SentencePiece, space correctly) and not ending in a partial UTF-8 character.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # start of the context window
        self.read = 0  # ids before this are already released

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return after[len(before) :]

    def flush(self) -> str:
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return after[len(before) :] if len(after) > len(before) else ""


def logits_processors(
    sampling: SamplingParameters,
    greedy: bool,
    *,
    prompt_length: int = 0,
    stop_token_ids: frozenset[int] = frozenset(),
    device: Any = "cpu",
) -> Any:
    """The processors ``generate`` would apply, in its order (the minimum length and the penalty first,
    then the sampling warpers)."""
    from transformers.generation import (
        LogitsProcessorList,
        MinNewTokensLengthLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
        TypicalLogitsWarper,
    )

    processors = LogitsProcessorList()
    if sampling.min_new_tokens > 0 and stop_token_ids:
        processors.append(
            MinNewTokensLengthLogitsProcessor(
                prompt_length, sampling.min_new_tokens, sorted(stop_token_ids), device=device
            )
        )
    if sampling.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty))
    if greedy:
        return processors
    if sampling.temperature != 1.0:
        processors.append(TemperatureLogitsWarper(sampling.temperature))
    if sampling.top_k > 0:
        processors.append(TopKLogitsWarper(sampling.top_k))
    if sampling.top_p < 1.0:
        processors.append(TopPLogitsWarper(sampling.top_p))
    if sampling.typical_p < 1.0:
        processors.append(TypicalLogitsWarper(sampling.typical_p))
    return processors


class Generation:
    """One request being generated: feed it each step's logits with :meth:`advance` until ``done``."""

    def __init__(
        self,
        *,
        input_ids: list[int],
        sampling: SamplingParameters,
        max_new_tokens: int,
        tokenizer: Any,
        stop_token_ids: frozenset[int],
        device: Any,
        cancel: threading.Event,
        emit: Emit,
    ) -> None:
        import torch

        self.input_ids = input_ids
        self.max_new_tokens = max_new_tokens
        self.stop_token_ids = stop_token_ids
        self.device = device
        self.cancel = cancel
        self.emit = emit
        self.greedy = not sampling.do_sample or sampling.temperature == 0
        self.processors = logits_processors(
            sampling, self.greedy, prompt_length=len(input_ids), stop_token_ids=stop_token_ids, device=device
        )
        self.generator: torch.Generator | None = None
        if not self.greedy:
            self.generator = torch.Generator(device=device)
            if sampling.seed is not None:
                self.generator.manual_seed(sampling.seed)
            else:
                self.generator.seed()
        self.stops = StopBuffer(sampling.stop)
        self.detok = Detokenizer(tokenizer)
        self.all_ids = torch.tensor([input_ids], device=device)  # what the penalty processors look at
        self.generated = 0
        self.last_token = -1
        self.reason = FinishReason.length
        self.done = max_new_tokens <= 0

    @property
    def cached_tokens(self) -> int:
        """Tokens of this sequence in the KV cache once its last token has been fed back."""
        return len(self.input_ids) + self.generated - 1

    def check_cancel(self) -> bool:
        """Seen before every forward pass: a cancel ends the sequence before its next token."""
        if not self.done and self.cancel.is_set():
            self.reason, self.done = FinishReason.cancelled, True
        return self.done

    def advance(self, logits: torch.Tensor) -> None:
        """Choose the next token from this sequence's last-position logits (shape ``[1, vocab]``)."""
        import torch

        scores = logits.float()
        if self.processors:
            scores = self.processors(self.all_ids, scores)
        if self.greedy:
            token = scores.argmax(dim=-1, keepdim=True)
        else:
            token = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=self.generator)
        self.generated += 1
        token_id = int(token)
        if token_id in self.stop_token_ids:
            self.reason, self.done = FinishReason.stop, True
            return
        self.last_token = token_id
        self.all_ids = torch.cat([self.all_ids, token], dim=-1)
        piece = self.stops.push(self.detok.add(token_id))
        if piece:
            self.emit(piece)
        if self.stops.stopped:
            self.reason, self.done = FinishReason.stop, True
        elif self.generated >= self.max_new_tokens:
            self.done = True

    def finish(self) -> Finished:
        """Release what the stop buffer and detokeniser still hold; how the generation ended."""
        if not self.stops.stopped:
            rest = self.stops.push(self.detok.flush()) + self.stops.flush()
            if rest:
                self.emit(rest)
        return Finished(
            self.reason, Usage(prompt_tokens=len(self.input_ids), completion_tokens=self.generated)
        )


class RelayHub:
    """Carries generations' events from the decoding thread to the event loop that asked for them.

    Waking the event loop costs the decoding thread the GIL and a system call, and every wake-up ripples
    on (the worker's writer, the server, the client each wake in turn). So the hub wakes the loop **once
    for every generation that has something**: text that comes within ``interval_s`` of the last wake-up
    waits and goes with the next one, whichever generation causes it. A batch of eight sequences thus
    wakes the loop at most every ``interval_s`` instead of eight times per step, while a generation's
    first piece — and every piece of a model slower than that — passes at once. Ends and errors always
    pass at once, after whatever text is still waiting.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, interval_s: float) -> None:
        self.loop = loop
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._pending: dict[Relay, None] = {}  # relays with something waiting, in arrival order
        self._scheduled = False  # a wake-up is on its way
        self._last = -math.inf

    def relay(self) -> Relay:
        """A new generation's channel (created in the event loop's thread)."""
        return Relay(self)

    def _note(self, relay: Relay, *, urgent: bool) -> None:
        """``relay`` has something waiting; wake the loop unless a wake-up is due anyway."""
        now = time.monotonic()
        with self._lock:
            self._pending[relay] = None
            if self._scheduled or (not urgent and now - self._last < self.interval_s):
                return
            self._scheduled, self._last = True, now
        with contextlib.suppress(RuntimeError):  # the listener's event loop is closed
            self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            relays = list(self._pending)
            self._pending.clear()
            self._scheduled = False
            handed = [(relay, relay._take()) for relay in relays]
        for relay, events in handed:
            for event in events:
                relay.events.put_nowait(event)


class Relay:
    """One generation's events, from the decoding thread (:meth:`emit`) to its listener (:meth:`get`);
    see :class:`RelayHub` for when they are handed over."""

    def __init__(self, hub: RelayHub) -> None:
        self.hub = hub
        self.events: asyncio.Queue[GenerationEvent | BaseException] = asyncio.Queue()
        self._text: list[str] = []
        self._ends: list[GenerationEvent | BaseException] = []
        self._started = False

    def emit(self, event: GenerationEvent | BaseException) -> None:
        """Called from the decoding thread; never fails because the listener went away."""
        with self.hub._lock:
            if isinstance(event, str):
                self._text.append(event)
                urgent = not self._started
                self._started = True
            else:
                self._ends.append(event)
                urgent = True
        self.hub._note(self, urgent=urgent)

    async def get(self) -> GenerationEvent | BaseException:
        return await self.events.get()

    def _take(self) -> list[GenerationEvent | BaseException]:
        """What is waiting, text first (called with the hub's lock held)."""
        taken: list[GenerationEvent | BaseException] = []
        if self._text:
            taken.append("".join(self._text))
            self._text.clear()
        taken.extend(self._ends)
        self._ends.clear()
        return taken


def batchable(model: Any) -> bool:
    """Whether the model's cache is plain per-layer keys and values that rows can join and leave."""
    try:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer
    except ImportError:  # pragma: no cover - transformers without the layered cache
        return False
    try:
        cache = DynamicCache(config=model.config)
    except Exception:  # a model whose config the cache cannot read: not batched
        return False
    return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)


class BatchLoop:
    """Continuous batching in one thread (see the module's docstring).

    ``submit`` hands over a prepared :class:`Generation`; the loop sends its ``emit`` the text pieces, then
    a ``Finished`` (or the exception that ended it).
    """

    def __init__(self, model: Any, *, cache_arg: str, forward_kwargs: dict[str, Any], max_batch: int) -> None:
        self.model = model
        self.cache_arg = cache_arg
        self.forward_kwargs = forward_kwargs
        self.max_batch = max_batch
        self._incoming: queue.SimpleQueue[Generation | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # the batch: one cache row, one attention-mask row and one entry per running sequence
        self._rows: list[Generation] = []
        self._cache: Any = None
        self._mask: torch.Tensor | None = None

    def submit(self, sequence: Generation) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="generate-batch", daemon=True)
                self._thread.start()
        self._incoming.put(sequence)

    def close(self) -> None:
        self._incoming.put(None)

    # -- the loop ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                if not self._take_new():
                    return
                if self._rows:
                    try:
                        self._step()
                    except Exception as exc:  # every running request learns why
                        log.exception("a batched decoding step failed")
                        for sequence in self._rows:
                            sequence.emit(exc)
                        self._reset()

    def _take_new(self) -> bool:
        """Prefill what has arrived (waiting when nothing runs); False once the loop is closed."""
        while len(self._rows) < self.max_batch:
            try:
                sequence = self._incoming.get(block=not self._rows)
            except queue.Empty:
                return True
            if sequence is None:
                for running in self._rows:
                    running.reason = FinishReason.cancelled
                    running.emit(running.finish())
                self._reset()
                return False
            try:
                self._prefill(sequence)
            except Exception as exc:  # this request fails; the batch goes on
                sequence.emit(exc)
        return True

    def _prefill(self, sequence: Generation) -> None:
        import torch
        from transformers import DynamicCache

        if sequence.check_cancel():
            sequence.emit(sequence.finish())
            return
        cache = DynamicCache(config=self.model.config)
        prompt = torch.tensor([sequence.input_ids], device=sequence.device)
        out = self.model(input_ids=prompt, **{self.cache_arg: cache}, **self.forward_kwargs)
        sequence.advance(out.logits[:, -1, :])
        if sequence.done:
            sequence.emit(sequence.finish())
            return
        self._join(cache, len(sequence.input_ids), sequence.device)
        self._rows.append(sequence)

    def _step(self) -> None:
        """One forward pass for every running sequence, then each chooses its next token."""
        import torch

        self._leave([i for i, s in enumerate(self._rows) if s.check_cancel()])
        if not self._rows:
            return
        assert self._mask is not None
        device = self._mask.device
        tokens = torch.tensor([[s.last_token] for s in self._rows], device=device)
        positions = torch.tensor([[s.cached_tokens] for s in self._rows], device=device)
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(self._rows), 1))], dim=1)
        out = self.model(
            input_ids=tokens,
            attention_mask=self._mask,
            position_ids=positions,
            **{self.cache_arg: self._cache},
            **self.forward_kwargs,
        )
        logits = out.logits[:, -1, :]
        for row, sequence in enumerate(self._rows):
            sequence.advance(logits[row : row + 1])
        self._leave([i for i, s in enumerate(self._rows) if s.done])

    # -- the batch's cache -------------------------------------------------------------------------------

    def _join(self, cache: Any, length: int, device: Any) -> None:
        """Add a prefilled sequence's cache as a new row, left-padding whichever side is shorter."""
        import torch

        row_mask = torch.ones((1, length), dtype=torch.long, device=device)
        if self._cache is None or self._mask is None:
            self._cache, self._mask = cache, row_mask
            return
        width = self._mask.shape[1]
        if length < width:
            _pad_left(cache, width - length)
            row_mask = torch.cat([row_mask.new_zeros((1, width - length)), row_mask], dim=1)
        elif length > width:
            _pad_left(self._cache, length - width)
            self._mask = torch.cat(
                [self._mask.new_zeros((self._mask.shape[0], length - width)), self._mask], dim=1
            )
        for mine, theirs in zip(self._cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([mine.keys, theirs.keys], dim=0)
            mine.values = torch.cat([mine.values, theirs.values], dim=0)
        self._mask = torch.cat([self._mask, row_mask], dim=0)

    def _leave(self, rows: list[int]) -> None:
        """Finish the sequences in ``rows`` and drop them from the batch (and padding nobody needs)."""
        if not rows:
            return
        import torch

        for row in rows:
            self._rows[row].emit(self._rows[row].finish())
        gone = set(rows)
        keep = [i for i in range(len(self._rows)) if i not in gone]
        self._rows = [self._rows[i] for i in keep]
        if not keep:
            self._reset()
            return
        assert self._mask is not None
        index = torch.tensor(keep, device=self._mask.device)
        self._mask = self._mask.index_select(0, index)
        padding = int((self._mask.shape[1] - self._mask.sum(dim=1)).min())
        self._mask = self._mask[:, padding:]
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, padding:, :]
            layer.values = layer.values.index_select(0, index)[:, :, padding:, :]

    def _reset(self) -> None:
        self._rows, self._cache, self._mask = [], None, None


def _pad_left(cache: Any, n: int) -> None:
    import torch

    for layer in cache.layers:
        for name in ("keys", "values"):
            tensor = getattr(layer, name)
            pad = tensor.new_zeros((*tensor.shape[:2], n, tensor.shape[3]))
            setattr(layer, name, torch.cat([pad, tensor], dim=2))
