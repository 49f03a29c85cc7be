"""A Hugging Face causal LM in this process (CPU or GPU): the model directories training writes, or any
hub model with a chat template.

Requests are decoded together, one forward pass per step for all of them (continuous batching, see
:mod:`oasst.inference.worker.decoding`), each with its own random generator, so concurrent requests
share neither state nor seeds. Models whose cache cannot be batched that way run each request's token
loop in a thread of its own instead (torch releases the GIL). Either way the engine owns the loop that
``model.generate`` would run — the logits processors, argmax or a draw — which gives exact stop, cancel
and usage semantics: a cancel is seen before the next token, a stop string ends the generation the token
it completes, and the counts are the tokens actually computed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
import weakref
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from oasst.inference.protocol import ChatTurn, WorkRequest
from oasst.inference.worker.decoding import BatchLoop, Generation, RelayHub, batchable
from oasst.inference.worker.engines import EngineError, Finished, GenerationEvent
from oasst.inference.worker.truncation import ContextTooLong, fit_to_context

__all__ = ["TransformersEngine"]

log = logging.getLogger(__name__)

DEFAULT_CONTEXT = 2048
# text that comes faster than this is handed to the event loop in groups (see decoding.RelayHub)
STREAM_INTERVAL_S = 0.02


class TransformersEngine:
    kind = "transformers"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_name: str,
        context_length: int | None = None,
        max_parallel: int = 1,
        stream_interval_s: float = STREAM_INTERVAL_S,
    ) -> None:
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.max_parallel = max_parallel
        self.stream_interval_s = stream_interval_s
        self.context_length = context_length or _context_length(model, tokenizer)
        self.device = next(model.parameters()).device
        if not getattr(tokenizer, "chat_template", None):
            from oasst.data.prompt_format import CHAT_TEMPLATE

            log.warning("%s has no chat template; using the oasst prompt format", model_name)
            tokenizer.chat_template = CHAT_TEMPLATE
        self.stop_token_ids = _stop_token_ids(model, tokenizer)
        # only compute the last position's logits where the model supports it (most current ones do)
        forward_parameters = inspect.signature(model.forward).parameters
        self._forward_kwargs: dict[str, Any] = {"use_cache": True}
        if "logits_to_keep" in forward_parameters:
            self._forward_kwargs["logits_to_keep"] = 1
        # transformers 5.x renames past_key_values to cache (the old name warns)
        self._cache_arg = "cache" if "cache" in forward_parameters else "past_key_values"
        self._tokenizer_lock = threading.Lock()  # a fast tokenizer is not safe to call from two threads
        self._pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="generate")
        self._batch: BatchLoop | None = None
        # one hub per event loop that asks for generations: all of them share its wake-ups
        self._hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RelayHub] = (
            weakref.WeakKeyDictionary()
        )
        if max_parallel > 1 and batchable(model):
            self._batch = BatchLoop(
                model, cache_arg=self._cache_arg, forward_kwargs=self._forward_kwargs, max_batch=max_parallel
            )

    @classmethod
    def load(
        cls,
        path: str,
        *,
        model_name: str | None = None,
        device: str = "auto",
        max_parallel: int = 1,
        context_length: int | None = None,
        threads: int | None = None,
    ) -> TransformersEngine:
        """Load a model directory (or hub id): GPU in bf16 when there is one, else CPU in fp32.

        On CPU torch uses ``threads`` intra-op threads (default: ``OMP_NUM_THREADS``, else 1 — more threads
        than free cores slows small models down many times).
        """
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu" and (threads or "OMP_NUM_THREADS" not in os.environ):
            torch.set_num_threads(threads or 1)
        dtype = torch.float32
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            dtype = torch.bfloat16
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise EngineError(f"cannot load a causal language model from {path!r}: {exc}") from exc
        model.to(device)
        model.eval()
        name = model_name or Path(path.rstrip("/")).name or path
        return cls(
            model, tokenizer, model_name=name, context_length=context_length, max_parallel=max_parallel
        )

    async def start(self) -> None:
        return None

    @property
    def batching(self) -> bool:
        """Whether concurrent requests share forward passes (see :mod:`oasst.inference.worker.decoding`)."""
        return self._batch is not None

    async def aclose(self) -> None:
        if self._batch is not None:
            self._batch.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- prompt -------------------------------------------------------------------------------------------

    def render(self, messages: Sequence[ChatTurn]) -> str:
        """The conversation in the model's chat template, ending where the assistant's answer begins."""
        return str(
            self.tokenizer.apply_chat_template(
                [{"role": m.role.value, "content": m.content} for m in messages],
                tokenize=False,
                add_generation_prompt=True,
            )
        )

    def encode(self, text: str) -> list[int]:
        # verbose=False: a chat longer than the model's context is measured here before it is cut, which
        # is not the "will result in indexing errors" the tokenizer would warn about
        with self._tokenizer_lock:
            return list(self.tokenizer.encode(text, add_special_tokens=False, verbose=False))

    def prompt_ids(self, request: WorkRequest) -> tuple[list[int], int]:
        """The prompt's token ids, cut to fit the context, and the clamped ``max_new_tokens``."""

        def keep_last(text: str, n: int) -> str:
            return str(self.tokenizer.decode(self.encode(text)[-n:]))

        try:
            fitted = fit_to_context(
                request.messages,
                lambda msgs: len(self.encode(self.render(msgs))),
                context_length=self.context_length,
                max_new_tokens=request.sampling.max_new_tokens,
                keep_last_tokens=keep_last,
            )
        except ContextTooLong as exc:
            raise EngineError(str(exc)) from exc
        if fitted.dropped_turns or fitted.cut_last_turn:
            log.info("request %s: dropped %d old turns to fit the context", request.id, fitted.dropped_turns)
        return self.encode(self.render(fitted.messages)), fitted.max_new_tokens

    # -- generation ---------------------------------------------------------------------------------------

    async def generate(
        self, request: WorkRequest, cancel: threading.Event | None = None
    ) -> AsyncIterator[GenerationEvent]:
        cancel = cancel or threading.Event()
        loop = asyncio.get_running_loop()
        hub = self._hubs.get(loop)
        if hub is None:
            hub = self._hubs[loop] = RelayHub(loop, self.stream_interval_s)
        relay = hub.relay()

        def work() -> None:
            try:
                input_ids, max_new_tokens = self.prompt_ids(request)
                sequence = Generation(
                    input_ids=input_ids,
                    sampling=request.sampling,
                    max_new_tokens=max_new_tokens,
                    tokenizer=self.tokenizer,
                    stop_token_ids=self.stop_token_ids,
                    device=self.device,
                    cancel=cancel,
                    emit=relay.emit,
                )
                if self._batch is not None:
                    self._batch.submit(sequence)  # the batch loop emits the rest
                else:
                    relay.emit(self._decode_alone(sequence))
            except BaseException as exc:
                relay.emit(exc)

        future = self._pool.submit(work)
        finished = False
        try:
            while not finished:
                event = await relay.get()
                if isinstance(event, BaseException):
                    finished = True
                    raise event
                finished = isinstance(event, Finished)
                yield event
        finally:
            if not finished:  # the consumer went away early: stop the loop before its next token
                cancel.set()
                future.cancel()

    def _decode_alone(self, sequence: Generation) -> Finished:
        """One request's token loop on its own (blocking): emits text pieces, returns how it finished."""
        import torch
        from transformers import DynamicCache

        next_input = torch.tensor([sequence.input_ids], device=self.device)
        with torch.inference_mode():
            cache = DynamicCache(config=self.model.config)
            while not sequence.check_cancel():
                out = self.model(input_ids=next_input, **{self._cache_arg: cache}, **self._forward_kwargs)
                sequence.advance(out.logits[:, -1, :])
                next_input = torch.tensor([[sequence.last_token]], device=self.device)
        return sequence.finish()


def _context_length(model: Any, tokenizer: Any) -> int:
    for value in (
        getattr(model.config, "max_position_embeddings", None),
        getattr(model.config, "n_positions", None),
        getattr(tokenizer, "model_max_length", None),
    ):
        if isinstance(value, int) and 0 < value < 10_000_000:
            return value
    return DEFAULT_CONTEXT


def _stop_token_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """End of sequence, and the oasst role markers: a model that opens a new turn has finished its own."""
    from oasst.data.prompt_format import SPECIAL_TOKENS

    ids: set[int] = set()
    eos = getattr(model.generation_config, "eos_token_id", None)
    for value in (eos if isinstance(eos, list) else [eos], [tokenizer.eos_token_id]):
        ids.update(v for v in value if isinstance(v, int))
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in SPECIAL_TOKENS if t in vocab)
    return frozenset(ids)
