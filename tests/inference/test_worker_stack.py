"""The real worker (tiny transformers model) behind the real inference server: what a client reads
through oasst's own ``/v1`` — with the OpenAI-upstream engine as that client — is what the engine makes
when called directly; a bad key ends the worker with the server's reason."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

pytest.importorskip("torch")

from oasst.inference.protocol import ChatTurn, FinishReason, Role, SamplingParameters, WorkRequest
from oasst.inference.server.settings import Settings
from oasst.inference.worker.engine_openai import OpenAIUpstreamEngine
from oasst.inference.worker.engine_transformers import TransformersEngine
from oasst.inference.worker.engines import Engine, collect
from oasst.inference.worker.runner import WorkerRefused, WorkerRunner, WorkerSettings
from tests.inference.conftest import MODEL, Keys, wait_for
from tests.inference.test_engines import tiny_model_dir

ServerFactory = Callable[[Settings], AbstractContextManager[str]]


@pytest.fixture(scope="module")
def tiny_engine() -> TransformersEngine:
    return TransformersEngine.load(str(tiny_model_dir()), model_name=MODEL, max_parallel=2)


@pytest.fixture
def greedy_settings(settings: Settings) -> Settings:
    """/v1 maps only OpenAI's fields onto the model's first preset: make that one plain greedy decoding."""
    greedy = SamplingParameters(do_sample=False, temperature=0.0, top_k=0, repetition_penalty=1.0)
    # these tests are about what comes through, not heartbeats: a loaded CI machine must not drop the worker
    return settings.model_copy(
        update={"model_presets": {"*": {"greedy": greedy}}, "heartbeat_timeout_s": 10.0}
    )


@contextlib.contextmanager
def running_worker(engine: Engine, url: str, key: str) -> Iterator[WorkerRunner]:
    """The worker loop on its own thread and event loop, as in its own process."""
    runner = WorkerRunner(engine, WorkerSettings(server_url=url, api_key=key, heartbeat_s=1.0, name="t"))
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    errors: list[BaseException] = []

    def main() -> None:
        try:
            loop.run_until_complete(runner.run(stop))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    try:
        wait_for(lambda: runner.connections or errors, what="the worker to connect")
        yield runner
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
        if errors:
            raise errors[0]


def turns() -> list[ChatTurn]:
    return [
        ChatTurn(role=Role.system, content="Answer kindly."),
        ChatTurn(role=Role.user, content="The small cat"),
    ]


def test_upstream_engine_through_oasst_v1_matches_direct(
    greedy_settings: Settings, server_factory: ServerFactory, keys: Keys, tiny_engine: TransformersEngine
) -> None:
    sampling = SamplingParameters(do_sample=False, temperature=0.0, repetition_penalty=1.0, max_new_tokens=20)
    request = WorkRequest(id="direct", model=MODEL, messages=turns(), sampling=sampling)
    direct_text, _, direct = asyncio.run(collect(tiny_engine, request))

    async def via_v1(url: str) -> Any:
        upstream = OpenAIUpstreamEngine(url, api_key=keys.api, max_parallel=2, extra_sampling=False)
        try:
            await upstream.start()
            assert upstream.upstream_model == MODEL  # found with GET /v1/models
            return await collect(upstream, request)
        finally:
            await upstream.aclose()

    with server_factory(greedy_settings) as url, running_worker(tiny_engine, url, keys.worker):
        text, pieces, finished = asyncio.run(via_v1(url))
    assert text == direct_text
    assert len(pieces) >= 1
    assert finished.finish_reason == direct.finish_reason
    assert finished.usage.completion_tokens == direct.usage.completion_tokens
    assert finished.usage.prompt_tokens == direct.usage.prompt_tokens


def test_stop_string_through_the_stack(
    greedy_settings: Settings, server_factory: ServerFactory, keys: Keys, tiny_engine: TransformersEngine
) -> None:
    sampling = SamplingParameters(do_sample=False, repetition_penalty=1.0, max_new_tokens=20)
    full, _, _ = asyncio.run(
        collect(tiny_engine, WorkRequest(id="f", model=MODEL, messages=turns(), sampling=sampling))
    )
    stop = full[6:10]
    request = WorkRequest(
        id="s", model=MODEL, messages=turns(), sampling=sampling.model_copy(update={"stop": [stop]})
    )

    async def via_v1(url: str) -> Any:
        upstream = OpenAIUpstreamEngine(url, api_key=keys.api, upstream_model=MODEL, extra_sampling=False)
        try:
            return await collect(upstream, request)
        finally:
            await upstream.aclose()

    with server_factory(greedy_settings) as url, running_worker(tiny_engine, url, keys.worker):
        text, _, finished = asyncio.run(via_v1(url))
    assert text == full[: full.index(stop)]
    assert finished.finish_reason == FinishReason.stop


def test_bad_worker_key_is_refused_by_the_server(
    settings: Settings, server_factory: ServerFactory, keys: Keys, tiny_engine: TransformersEngine
) -> None:
    with server_factory(settings) as url:
        runner = WorkerRunner(tiny_engine, WorkerSettings(server_url=url, api_key="not-a-key"))
        with pytest.raises(WorkerRefused) as caught:
            asyncio.run(asyncio.wait_for(runner.run(), 10))
        assert caught.value.code == "key_invalid"
        runner = WorkerRunner(tiny_engine, WorkerSettings(server_url=url, api_key=keys.api))
        with pytest.raises(WorkerRefused, match="worker key"):
            asyncio.run(asyncio.wait_for(runner.run(), 10))
