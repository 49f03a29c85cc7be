"""An OpenAI-compatible upstream: vLLM, TGI, llama.cpp server, or oasst's own ``/v1``.

The worker streams ``POST {base}/v1/chat/completions`` (``stream: true``) and relays the deltas. The
sampling fields OpenAI lacks (``top_k``, ``typical_p``, ``repetition_penalty``, ``min_tokens``) are sent as extra body
fields, which vLLM and llama.cpp honour and most others ignore. Stop strings are sent upstream *and*
applied here, so the result is the same whether or not the upstream supports them. Usage comes from
the final chunk (``stream_options.include_usage``); an upstream that sends none is counted one token a
chunk. Cancelling closes the stream, which stops generation upstream.

The upstream applies its own chat template. With a ``tokenizer`` (a directory or hub id with the same
template) the conversation is also cut to ``context_length`` here; without one, a prompt too long for the
upstream comes back as its error.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx

from oasst.inference.protocol import FinishReason, Usage, WorkRequest
from oasst.inference.worker.engines import EngineError, Finished, GenerationEvent, StopBuffer
from oasst.inference.worker.truncation import ContextTooLong, fit_to_context

__all__ = ["OpenAIUpstreamEngine"]

DEFAULT_CONTEXT = 2048
FINISH_REASONS = {"stop": FinishReason.stop, "length": FinishReason.length}


def api_base(url: str) -> str:
    """``http://host:8000``, ``.../v1`` or ``.../v1/`` → ``http://host:8000/v1``."""
    base = url.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


class OpenAIUpstreamEngine:
    kind = "openai-upstream"

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        upstream_model: str | None = None,
        model_name: str | None = None,
        max_parallel: int = 1,
        context_length: int | None = None,
        tokenizer: str | None = None,
        timeout_s: float = 300.0,
        extra_sampling: bool = True,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        self.base = api_base(base_url)
        self.upstream_model = upstream_model
        self.model_name = model_name or upstream_model or ""
        self.max_parallel = max_parallel
        self.context_length = context_length or DEFAULT_CONTEXT
        self.extra_sampling = extra_sampling
        self._tokenizer_path = tokenizer
        self._tokenizer: Any = None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._own_client = client is None
        self.client = client or httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=max_parallel + 2, max_keepalive_connections=max_parallel + 2),
        )
        if client is not None and api_key:
            self.client.headers.update(headers)

    async def start(self) -> None:
        """Find the upstream model when none was named (the first of ``GET /v1/models``)."""
        if self._tokenizer_path and self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self._tokenizer_path)
        if self.upstream_model is None:
            try:
                response = await self.client.get(f"{self.base}/models")
                response.raise_for_status()
                models = response.json().get("data") or []
            except (httpx.HTTPError, ValueError) as exc:
                raise EngineError(f"cannot list the upstream's models at {self.base}/models: {exc}") from exc
            if not models:
                raise EngineError(f"the upstream at {self.base} serves no models")
            self.upstream_model = str(models[0]["id"])
        self.model_name = self.model_name or self.upstream_model

    async def aclose(self) -> None:
        if self._own_client:
            await self.client.aclose()

    def body(self, request: WorkRequest) -> dict[str, Any]:
        """The chat completion request for ``request`` (after truncation when a tokenizer is known)."""
        sampling = request.sampling
        messages, max_tokens = request.messages, sampling.max_new_tokens
        if self._tokenizer is not None:
            messages, max_tokens = self._fit(request)
        greedy = not sampling.do_sample or sampling.temperature == 0
        body: dict[str, Any] = {
            "model": self.upstream_model,
            "messages": [{"role": m.role.value, "content": m.content} for m in messages],
            "max_tokens": max_tokens,
            "temperature": 0.0 if greedy else sampling.temperature,
            "top_p": 1.0 if greedy else sampling.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if self.extra_sampling:
            if not greedy:
                body["top_k"] = sampling.top_k
                body["typical_p"] = sampling.typical_p
            body["repetition_penalty"] = sampling.repetition_penalty
            if sampling.min_new_tokens:
                body["min_tokens"] = sampling.min_new_tokens
        return body

    def _fit(self, request: WorkRequest) -> tuple[Any, int]:
        tok = self._tokenizer

        def count(msgs: Any) -> int:
            text = tok.apply_chat_template(
                [{"role": m.role.value, "content": m.content} for m in msgs],
                tokenize=False,
                add_generation_prompt=True,
            )
            return len(tok.encode(text, add_special_tokens=False, verbose=False))  # measured before cutting

        def keep_last(text: str, n: int) -> str:
            return str(tok.decode(tok.encode(text, add_special_tokens=False, verbose=False)[-n:]))

        try:
            fitted = fit_to_context(
                request.messages,
                count,
                context_length=self.context_length,
                max_new_tokens=request.sampling.max_new_tokens,
                keep_last_tokens=keep_last,
            )
        except ContextTooLong as exc:
            raise EngineError(str(exc)) from exc
        return fitted.messages, fitted.max_new_tokens

    async def generate(
        self, request: WorkRequest, cancel: threading.Event | None = None
    ) -> AsyncIterator[GenerationEvent]:
        if self.upstream_model is None:
            await self.start()
        cancel = cancel or threading.Event()
        body = self.body(request)
        stops = StopBuffer(request.sampling.stop)
        chunks = 0
        reason = FinishReason.length
        usage: Usage | None = None
        try:
            async with self.client.stream("POST", f"{self.base}/chat/completions", json=body) as response:
                if response.status_code != 200:
                    detail = (await response.aread()).decode(errors="replace")[:500]
                    raise EngineError(f"the upstream answered {response.status_code}: {detail}")
                async for chunk in _sse_chunks(response):
                    if cancel.is_set():
                        reason = FinishReason.cancelled
                        break
                    if chunk.get("usage"):
                        usage = Usage(
                            prompt_tokens=int(chunk["usage"].get("prompt_tokens") or 0),
                            completion_tokens=int(chunk["usage"].get("completion_tokens") or 0),
                        )
                    for choice in chunk.get("choices") or []:
                        delta = (choice.get("delta") or {}).get("content")
                        if delta:
                            chunks += 1
                            piece = stops.push(delta)
                            if piece:
                                yield piece
                        if choice.get("finish_reason"):
                            reason = FINISH_REASONS.get(choice["finish_reason"], FinishReason.stop)
                    if stops.stopped:
                        reason = FinishReason.stop
                        break
        except httpx.HTTPError as exc:
            raise EngineError(f"the upstream at {self.base} failed: {exc.__class__.__name__}: {exc}") from exc
        rest = stops.flush()
        if rest:
            yield rest
        if usage is None:  # no usage chunk (an old upstream, or the stream was closed early)
            usage = Usage(completion_tokens=chunks)
        yield Finished(reason, usage)


async def _sse_chunks(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of an OpenAI event stream, up to ``data: [DONE]``; an error event raises."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise EngineError(f"the upstream sent a chunk that is not JSON: {data[:200]}") from exc
        if not isinstance(chunk, dict):
            continue
        if "error" in chunk:
            error = chunk["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise EngineError(f"the upstream failed: {message}")
        yield chunk
