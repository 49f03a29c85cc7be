"""The OpenAI-compatible upstream engine against a small real streaming ``/v1/chat/completions``
(Starlette under uvicorn). Against oasst's own ``/v1``: ``test_worker_stack``."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from oasst.inference.protocol import ChatTurn, FinishReason, Role, SamplingParameters, WorkRequest
from oasst.inference.worker.engine_openai import OpenAIUpstreamEngine, api_base
from oasst.inference.worker.engines import EngineError, Finished, collect
from tests.inference.test_worker_runner import serving

WORDS = ["Hello", " there", ",", " general", " Kenobi", ".", " You", " are", " a", " bold", " one", "."]
UP_KEY = "upstream-secret"


class FakeUpstream:
    """Streams WORDS one chunk each (ignores ``stop``, like a server that lacks it), then usage."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.bodies: list[dict[str, Any]] = []
        self.completed = 0
        self.closed_early = 0
        self.app = Starlette(
            routes=[
                Route("/v1/models", self.models),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
            ]
        )

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "up-model", "object": "model"}]})

    async def chat(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {UP_KEY}":
            return JSONResponse({"error": {"message": "invalid api key"}}, status_code=401)
        body = await request.json()
        self.bodies.append(body)
        if body["messages"][-1]["content"] == "break":
            return StreamingResponse(self.broken(), media_type="text/event-stream")
        n = min(body["max_tokens"], len(WORDS))
        reason = "length" if n < len(WORDS) else "stop"
        return StreamingResponse(self.stream(n, reason), media_type="text/event-stream")

    async def stream(self, n: int, reason: str) -> AsyncIterator[str]:
        done = False
        try:
            for word in WORDS[:n]:
                yield _data({"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]})
                await asyncio.sleep(self.delay)
            yield _data({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
            yield _data({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": n}})
            yield "data: [DONE]\n\n"
            done = True
        finally:
            if done:
                self.completed += 1
            else:
                self.closed_early += 1

    async def broken(self) -> AsyncIterator[str]:
        yield _data({"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]})
        yield _data({"error": {"message": "model overloaded"}})


def _data(obj: Any) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def request(content: str = "Hi", **sampling: Any) -> WorkRequest:
    return WorkRequest(
        id="u1",
        model="up",
        messages=[ChatTurn(role=Role.system, content="Be brief."), ChatTurn(role=Role.user, content=content)],
        sampling=SamplingParameters(**{"max_new_tokens": 64, **sampling}),
    )


def with_upstream(
    test: Any, *, delay: float = 0.0, key: str = UP_KEY, upstream_model: str | None = None
) -> FakeUpstream:
    upstream = FakeUpstream(delay)

    async def main() -> None:
        async with serving(upstream.app) as port:
            engine = OpenAIUpstreamEngine(
                f"http://127.0.0.1:{port}", api_key=key, upstream_model=upstream_model, max_parallel=2
            )
            try:
                await engine.start()
                await test(engine)
            finally:
                await engine.aclose()

    asyncio.run(main())
    return upstream


def test_api_base() -> None:
    assert api_base("http://h:8000") == api_base("http://h:8000/v1/") == "http://h:8000/v1"


def test_streams_text_with_usage_and_maps_sampling() -> None:
    async def check(engine: OpenAIUpstreamEngine) -> None:
        assert engine.model_name == engine.upstream_model == "up-model"  # from GET /v1/models
        text, pieces, finished = await collect(
            engine, request(temperature=0.7, top_p=0.9, top_k=20, seed=5, stop=["zzz"], min_new_tokens=3)
        )
        assert text == "".join(WORDS) and len(pieces) == len(WORDS)
        assert finished == Finished(FinishReason.stop, finished.usage)
        assert (finished.usage.prompt_tokens, finished.usage.completion_tokens) == (11, len(WORDS))

    upstream = with_upstream(check)
    body = upstream.bodies[0]
    assert body["model"] == "up-model" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["top_k"]) == (64, 0.7, 0.9, 20)
    assert (body["seed"], body["stop"], body["min_tokens"]) == (5, ["zzz"], 3)


def test_greedy_sends_temperature_zero() -> None:
    async def check(engine: OpenAIUpstreamEngine) -> None:
        await collect(engine, request(do_sample=False))

    body = with_upstream(check, upstream_model="named").bodies[0]
    assert body["model"] == "named" and body["temperature"] == 0.0 and "top_k" not in body


def test_length_finish() -> None:
    async def check(engine: OpenAIUpstreamEngine) -> None:
        text, _, finished = await collect(engine, request(max_new_tokens=3))
        assert text == "Hello there,"
        assert finished.finish_reason == FinishReason.length and finished.usage.completion_tokens == 3

    with_upstream(check)


def test_stop_string_is_applied_here_and_closes_the_stream() -> None:
    async def check(engine: OpenAIUpstreamEngine) -> None:
        text, _, finished = await collect(engine, request(stop=["Kenobi"]))
        assert text == "Hello there, general "
        assert finished.finish_reason == FinishReason.stop
        assert finished.usage.completion_tokens == 5  # counted by chunks: the usage chunk never came

    upstream = with_upstream(check, delay=0.02)
    assert upstream.closed_early == 1 and upstream.completed == 0


def test_cancel_closes_the_stream() -> None:
    async def check(engine: OpenAIUpstreamEngine) -> None:
        cancel = threading.Event()
        finished = None
        async for event in engine.generate(request(), cancel):
            if isinstance(event, Finished):
                finished = event
            else:
                cancel.set()
        assert finished is not None and finished.finish_reason == FinishReason.cancelled
        assert finished.usage.completion_tokens <= 2

    upstream = with_upstream(check, delay=0.05)
    assert upstream.closed_early == 1


def test_upstream_errors_are_engine_errors() -> None:
    async def bad_key(engine: OpenAIUpstreamEngine) -> None:
        with pytest.raises(EngineError, match=r"401.*invalid api key"):
            await collect(engine, request())

    with_upstream(bad_key, key="wrong", upstream_model="up-model")

    async def error_chunk(engine: OpenAIUpstreamEngine) -> None:
        with pytest.raises(EngineError, match="model overloaded"):
            await collect(engine, request("break"))

    with_upstream(error_chunk)

    async def unreachable() -> None:
        engine = OpenAIUpstreamEngine("http://127.0.0.1:9", upstream_model="m")
        with pytest.raises(EngineError, match="failed"):
            await collect(engine, request())
        with pytest.raises(EngineError, match="cannot list"):
            await OpenAIUpstreamEngine("http://127.0.0.1:9").start()
        await engine.aclose()

    asyncio.run(unreachable())


def test_truncation_with_a_tokenizer(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from tests.inference.test_engines import tiny_model_dir

    upstream = FakeUpstream()

    async def main() -> None:
        async with serving(upstream.app) as port:
            engine = OpenAIUpstreamEngine(
                f"http://127.0.0.1:{port}",
                api_key=UP_KEY,
                upstream_model="up-model",
                context_length=128,
                tokenizer=str(tiny_model_dir()),
            )
            await engine.start()
            turns = [ChatTurn(role=Role.system, content="SYSTEM")]
            for i in range(30):
                turns += [
                    ChatTurn(role=Role.user, content=f"q{i} the cat likes to run"),
                    ChatTurn(role=Role.assistant, content=f"a{i} the dog likes to eat"),
                ]
            turns.append(ChatTurn(role=Role.user, content="LAST"))
            req = request().model_copy(update={"messages": turns})
            await collect(engine, req)
            await engine.aclose()

    asyncio.run(main())
    sent = upstream.bodies[0]["messages"]
    assert sent[0] == {"role": "system", "content": "SYSTEM"}
    assert sent[-1] == {"role": "user", "content": "LAST"}
    assert sent[1]["role"] == "user" and 3 < len(sent) < 61
    assert sent[-2]["content"].startswith("a29")
    assert upstream.bodies[0]["max_tokens"] == 64
