"""What a worker runs a model with: the :class:`Engine` protocol, and what every engine shares.

An engine turns a :class:`~oasst.inference.protocol.WorkRequest` into text. ``generate`` is an async
generator of events: text pieces (``str``, never the start of a stop string that may still complete),
then exactly one :class:`Finished` with the finish reason and exact token usage. A request is cancelled
by setting the :class:`threading.Event` passed in; the engine then stops within one token and still
ends with a :class:`Finished` (reason ``cancelled``) for the text produced so far. Closing the generator
early (``aclose``, task cancellation) cancels the generation too.

The engines themselves live in ``engine_transformers`` (a Hugging Face model in this process) and
``engine_openai`` (an OpenAI-compatible server such as vLLM, TGI or llama.cpp); :func:`make_engine` builds
either from plain options, importing torch only for the first.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from oasst.inference.protocol import FinishReason, Usage, WorkRequest

if TYPE_CHECKING:
    from oasst.inference.worker.engine_openai import OpenAIUpstreamEngine
    from oasst.inference.worker.engine_transformers import TransformersEngine

__all__ = [
    "Engine",
    "EngineError",
    "Finished",
    "GenerationEvent",
    "StopBuffer",
    "collect",
    "make_engine",
]


class EngineError(Exception):
    """A request the engine could not serve; the message is safe to show to the user."""


@dataclass(frozen=True)
class Finished:
    """The last event of a generation."""

    finish_reason: FinishReason
    usage: Usage


GenerationEvent = str | Finished


@runtime_checkable
class Engine(Protocol):
    """A model the worker can serve."""

    kind: str  # "transformers", "openai-upstream": announced in the worker's hello
    model_name: str  # the name clients ask for
    context_length: int  # prompt + completion tokens the model can see
    max_parallel: int  # requests it runs at once

    async def start(self) -> None:
        """Get ready to serve (connect, look up the upstream model); called once before ``generate``."""
        ...

    def generate(
        self, request: WorkRequest, cancel: threading.Event | None = None
    ) -> AsyncIterator[GenerationEvent]:
        """Text pieces, then one :class:`Finished`. Raises :class:`EngineError` for a bad request."""
        ...

    async def aclose(self) -> None:
        """Release the model, threads and connections."""
        ...


class StopBuffer:
    """Holds back text that may be the start of a stop string, and cuts the text at the first one.

    ``push`` returns the text that is safe to emit now; once a stop string is complete, ``stopped`` is
    true and nothing after the stop string (nor the stop string itself) is ever returned. ``flush``
    returns what was held back when the generation ends for another reason.
    """

    def __init__(self, stops: Sequence[str] = ()) -> None:
        self.stops = [s for s in stops if s]
        self.stopped = False
        self._pending = ""

    def push(self, text: str) -> str:
        if self.stopped:
            return ""
        if not self.stops:
            return text
        pending = self._pending + text
        hits = [i for i in (pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            self._pending = ""
            return pending[: min(hits)]
        hold = max((self._overlap(pending, s) for s in self.stops), default=0)
        self._pending = pending[len(pending) - hold :]
        return pending[: len(pending) - hold]

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return "" if self.stopped else out

    @staticmethod
    def _overlap(text: str, stop: str) -> int:
        """The length of the longest end of ``text`` that is a proper start of ``stop``."""
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                return k
        return 0


async def collect(
    engine: Engine, request: WorkRequest, cancel: threading.Event | None = None
) -> tuple[str, list[str], Finished]:
    """Run one request to the end: the whole text, its pieces, and how it finished."""
    pieces: list[str] = []
    finished: Finished | None = None
    async for event in engine.generate(request, cancel):
        if isinstance(event, Finished):
            finished = event
        else:
            pieces.append(event)
    if finished is None:
        raise EngineError("the engine ended without finishing the generation")
    return "".join(pieces), pieces, finished


def make_engine(
    *,
    model: str | None = None,
    upstream: str | None = None,
    upstream_key: str | None = None,
    upstream_model: str | None = None,
    name: str | None = None,
    max_parallel: int = 1,
    context_length: int | None = None,
    device: str = "auto",
    threads: int | None = None,
    tokenizer: str | None = None,
) -> TransformersEngine | OpenAIUpstreamEngine:
    """A transformers engine for ``model`` (a model directory or hub id), or an OpenAI-compatible upstream
    at ``upstream``. Exactly one of the two must be given."""
    if (model is None) == (upstream is None):
        raise ValueError("give either a model (directory or hub id) or an upstream URL, not both")
    if model is not None:
        from oasst.inference.worker.engine_transformers import TransformersEngine

        return TransformersEngine.load(
            model,
            model_name=name,
            device=device,
            max_parallel=max_parallel,
            context_length=context_length,
            threads=threads,
        )
    from oasst.inference.worker.engine_openai import OpenAIUpstreamEngine

    assert upstream is not None
    return OpenAIUpstreamEngine(
        upstream,
        api_key=upstream_key,
        upstream_model=upstream_model,
        model_name=name,
        max_parallel=max_parallel,
        context_length=context_length,
        tokenizer=tokenizer,
    )
