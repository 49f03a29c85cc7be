"""The transformers engine on a real (tiny, locally bootstrapped) model: the same text as
``model.generate``, stop strings, length, cancellation, truncation; and the stop-string buffer."""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from oasst.inference.protocol import (  # noqa: E402
    ChatTurn,
    FinishReason,
    Role,
    SamplingParameters,
    Usage,
    WorkRequest,
)
from oasst.inference.worker.decoding import RelayHub  # noqa: E402
from oasst.inference.worker.engine_transformers import TransformersEngine  # noqa: E402
from oasst.inference.worker.engines import EngineError, Finished, StopBuffer, collect  # noqa: E402

SUBJECTS = ["small", "big", "red", "old", "young", "happy"]
ANIMALS = ["cat", "dog", "bird", "fish", "horse"]
VERBS = ["run", "sing", "eat", "sleep", "jump"]
TIMES = ["day", "night", "week", "morning"]


@functools.cache
def tiny_model_dir() -> Path:
    """A tiny model with the oasst chat template, built once per test session (a few seconds)."""
    from oasst.training.bootstrap import BootstrapConfig, bootstrap

    texts = [
        f"The {s} {a} likes to {v} every {t}."
        for s in SUBJECTS
        for a in ANIMALS
        for v in VERBS
        for t in TIMES
    ]
    out = Path(tempfile.mkdtemp(prefix="oasst-worker-model-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        # bootstrap's pre-training loop calls float() on a loss that requires grad (a torch UserWarning)
        warnings.simplefilter("ignore", UserWarning)
        cfg = BootstrapConfig(output_dir=str(out), vocab_size=512, pretrain_steps=20, seed=0)
        return bootstrap(texts, cfg)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return tiny_model_dir()


@pytest.fixture(scope="session")
def engine(model_dir: Path) -> TransformersEngine:
    return TransformersEngine.load(str(model_dir), model_name="tiny", max_parallel=2)


def request(*messages: tuple[str, str], rid: str = "r1", **sampling: Any) -> WorkRequest:
    params = {"do_sample": False, "repetition_penalty": 1.0, "max_new_tokens": 24, **sampling}
    return WorkRequest(
        id=rid,
        model="tiny",
        messages=[ChatTurn(role=Role(role), content=content) for role, content in messages],
        sampling=SamplingParameters(**params),
    )


CONVERSATION = (("system", "Answer kindly."), ("user", "The small cat"))


def reference(engine: TransformersEngine, req: WorkRequest, **kwargs: Any) -> tuple[str, int]:
    """What ``model.generate`` makes of the same prompt: text and new token count."""
    ids, max_new = engine.prompt_ids(req)
    out = engine.model.generate(
        torch.tensor([ids]),
        max_new_tokens=max_new,
        eos_token_id=sorted(engine.stop_token_ids),
        pad_token_id=engine.tokenizer.pad_token_id,
        **kwargs,
    )
    new = out[0, len(ids) :].tolist()
    return engine.tokenizer.decode(new, skip_special_tokens=True), len(new)


def run(engine: TransformersEngine, req: WorkRequest, cancel: threading.Event | None = None) -> Any:
    return asyncio.run(collect(engine, req, cancel))


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_greedy_matches_generate(engine: TransformersEngine, penalty: float) -> None:
    req = request(*CONVERSATION, repetition_penalty=penalty)
    text, pieces, finished = run(engine, req)
    expected, new_tokens = reference(engine, req, do_sample=False, repetition_penalty=penalty)
    assert text == expected
    assert len(pieces) > 1  # streamed, not one block
    assert finished.usage.completion_tokens == new_tokens
    assert finished.usage.prompt_tokens == len(engine.prompt_ids(req)[0])
    expected_reason = FinishReason.length if new_tokens == req.sampling.max_new_tokens else FinishReason.stop
    assert finished.finish_reason == expected_reason


def test_seeded_sampling_matches_generate_and_repeats(engine: TransformersEngine) -> None:
    sampling = {"do_sample": True, "temperature": 0.9, "top_k": 40, "top_p": 0.9, "repetition_penalty": 1.1}
    req = request(*CONVERSATION, seed=1234, **sampling)
    first, _, _ = run(engine, req)
    assert run(engine, req)[0] == first
    torch.manual_seed(1234)
    expected, _ = reference(engine, req, **sampling)
    assert first == expected


def test_stop_string_cuts_and_finishes_with_stop(engine: TransformersEngine) -> None:
    full, _, full_finished = run(engine, request(*CONVERSATION))
    assert len(full) > 12, full
    stop = full[6:10]
    cut = full.index(stop)
    text, pieces, finished = run(engine, request(*CONVERSATION, stop=["zzzz-never", stop]))
    assert text == full[:cut]
    assert all(stop not in p for p in pieces)
    assert finished.finish_reason == FinishReason.stop
    assert finished.usage.completion_tokens < full_finished.usage.completion_tokens


def test_max_new_tokens_gives_length_and_exact_count(engine: TransformersEngine) -> None:
    _, _, full = run(engine, request(*CONVERSATION))
    limit = min(5, full.usage.completion_tokens - 1)
    text, _, finished = run(engine, request(*CONVERSATION, max_new_tokens=limit))
    assert finished.finish_reason == FinishReason.length
    assert finished.usage.completion_tokens == limit
    expected, _ = reference(engine, request(*CONVERSATION, max_new_tokens=limit), do_sample=False)
    assert text == expected


def test_min_new_tokens_holds_the_end_back_as_generate_does(engine: TransformersEngine) -> None:
    _, _, natural = run(engine, request(*CONVERSATION, max_new_tokens=80))
    assert natural.finish_reason == FinishReason.stop  # the model ends this answer by itself
    at_least = natural.usage.completion_tokens + 5
    req = request(*CONVERSATION, max_new_tokens=80, min_new_tokens=at_least)
    text, _, finished = run(engine, req)
    assert finished.usage.completion_tokens >= at_least
    expected, new_tokens = reference(engine, req, do_sample=False, min_new_tokens=at_least)
    assert (text, finished.usage.completion_tokens) == (expected, new_tokens)


def test_cancel_stops_early(engine: TransformersEngine) -> None:
    cancel = threading.Event()
    cancel.set()
    text, _, finished = run(engine, request(*CONVERSATION, max_new_tokens=200), cancel)
    assert (text, finished.finish_reason, finished.usage.completion_tokens) == ("", FinishReason.cancelled, 0)

    endless = TransformersEngine(engine.model, engine.tokenizer, model_name="tiny")
    endless.stop_token_ids = frozenset()  # only the cancel (or 400 tokens) can end it

    async def cancel_after_first_piece() -> Finished:
        cancel = threading.Event()
        req = request(*CONVERSATION, max_new_tokens=400)
        async for event in endless.generate(req, cancel):
            if isinstance(event, Finished):
                return event
            cancel.set()
        raise AssertionError("no Finished event")

    finished = asyncio.run(cancel_after_first_piece())
    assert finished.finish_reason == FinishReason.cancelled
    assert finished.usage.completion_tokens < 100


def test_closing_the_stream_cancels_the_generation(engine: TransformersEngine) -> None:
    async def main() -> None:
        cancel = threading.Event()
        stream = engine.generate(request(*CONVERSATION, max_new_tokens=400, do_sample=True, seed=3), cancel)
        await anext(aiter(stream))
        await stream.aclose()  # type: ignore[attr-defined]
        assert cancel.is_set()

    asyncio.run(main())


def test_concurrent_requests_are_independent(engine: TransformersEngine) -> None:
    reqs = [request(*CONVERSATION, rid=str(i), do_sample=True, seed=i, max_new_tokens=16) for i in range(4)]

    async def main() -> list[str]:
        results = await asyncio.gather(*(collect(engine, r) for r in reqs))
        return [text for text, _, _ in results]

    together = asyncio.run(main())
    alone = [run(engine, r)[0] for r in reqs]
    assert together == alone


def test_batched_requests_of_every_length_match_their_runs_alone(model_dir: Path) -> None:
    """Prompts of different lengths share forward passes (left-padded); requests join a running batch
    and leave it at different times (length, stop string, stop token); each gets the text it gets alone."""
    batched = TransformersEngine.load(str(model_dir), model_name="tiny", max_parallel=4)
    alone = TransformersEngine.load(str(model_dir), model_name="tiny", max_parallel=1)
    assert batched.batching and not alone.batching
    prompts = ["The cat", "The young horse likes to sing every", "A dog", "Every night the old bird and fish"]
    reqs = [
        request(("user", text), rid=str(i), do_sample=i > 0, seed=i, max_new_tokens=8 + 6 * i)
        for i, text in enumerate(prompts)
    ]
    texts = [run(alone, r)[0] for r in reqs]
    stopped = next(i for i, text in enumerate(texts) if len(text) > 8)
    reqs[stopped].sampling.stop = [texts[stopped][4:8]]  # this one ends on a stop string
    reqs.append(request(("user", "The happy cat"), rid="late", max_new_tokens=3))  # ends on its length

    async def staggered() -> list[tuple[str, Finished]]:
        async def one(req: WorkRequest, delay: float) -> tuple[str, Finished]:
            await asyncio.sleep(delay)  # the later ones join a batch that is already decoding
            text, _, finished = await collect(batched, req)
            return text, finished

        return await asyncio.gather(*(one(r, 0.02 * i) for i, r in enumerate(reqs)))

    together = asyncio.run(staggered())
    expected = [run(alone, r) for r in reqs]
    assert [t for t, _ in together] == [t for t, _, _ in expected]
    assert [f for _, f in together] == [f for _, _, f in expected]
    assert together[stopped][1].finish_reason == FinishReason.stop
    assert FinishReason.length in {f.finish_reason for _, f in together}


def test_a_cancel_leaves_the_batch_and_the_others_go_on(model_dir: Path) -> None:
    batched = TransformersEngine.load(str(model_dir), model_name="tiny", max_parallel=3)
    batched.stop_token_ids = frozenset()  # nothing ends early but the cancel or the length
    keep = request(("user", "The old dog"), rid="keep", max_new_tokens=40)
    single = TransformersEngine(batched.model, batched.tokenizer, model_name="tiny")
    single.stop_token_ids = frozenset()
    alone_text = run(single, keep)[0]

    async def main() -> tuple[Finished, str]:
        cancel = threading.Event()
        dropped = request(("user", "A bird sings"), rid="drop", max_new_tokens=400)

        async def cancel_after_first_piece() -> Finished:
            async for event in batched.generate(dropped, cancel):
                if isinstance(event, Finished):
                    return event
                cancel.set()
            raise AssertionError("no Finished event")

        cancelled, (text, _, _) = await asyncio.gather(cancel_after_first_piece(), collect(batched, keep))
        return cancelled, text

    cancelled, text = asyncio.run(main())
    assert cancelled.finish_reason == FinishReason.cancelled and cancelled.usage.completion_tokens < 100
    assert text == alone_text


def test_long_conversation_keeps_system_and_newest_turns(engine: TransformersEngine) -> None:
    turns: list[tuple[str, str]] = [("system", "SYSTEM-PROMPT stays.")]
    for i in range(40):
        turns.append(("user", f"question {i}: " + "the red dog likes to run every day. " * 4))
        turns.append(("assistant", f"answer {i}: " + "the old fish likes to sleep every night. " * 4))
    turns.append(("user", "LAST-QUESTION here?"))
    req = request(*turns, max_new_tokens=64)
    ids, max_new = engine.prompt_ids(req)
    prompt = engine.tokenizer.decode(ids)
    assert len(ids) + max_new <= engine.context_length
    assert max_new == 64
    assert prompt.startswith("<|system|>SYSTEM-PROMPT stays.")
    assert prompt.endswith("<|prompter|>LAST-QUESTION here?<|endoftext|><|assistant|>")
    assert "answer 39:" in prompt and "question 39:" in prompt
    assert "question 0:" not in prompt
    # whole turns only: the first kept turn after the system prompt is a complete user turn
    assert prompt.split("<|endoftext|>")[1].startswith("<|prompter|>question ")
    _, _, finished = run(engine, req)
    assert finished.usage.prompt_tokens == len(ids)


def test_too_long_last_message_keeps_its_end(engine: TransformersEngine) -> None:
    req = request(("system", "Be brief."), ("user", "word " * 2000 + "THE-END"), max_new_tokens=32)
    ids, max_new = engine.prompt_ids(req)
    prompt = engine.tokenizer.decode(ids)
    assert prompt.startswith("<|system|>Be brief.<|endoftext|><|prompter|>")
    assert prompt.endswith("THE-END<|endoftext|><|assistant|>")
    assert len(ids) + max_new <= engine.context_length


def test_max_new_tokens_is_clamped_to_the_context(engine: TransformersEngine) -> None:
    req = request(*CONVERSATION, max_new_tokens=5000)
    ids, max_new = engine.prompt_ids(req)
    assert len(ids) + max_new == engine.context_length


def test_load_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="cannot load"):
        TransformersEngine.load(str(tmp_path))


# -- stop buffer ------------------------------------------------------------------------------------------


def feed(stops: list[str], pieces: list[str]) -> tuple[list[str], bool]:
    buffer = StopBuffer(stops)
    out = [buffer.push(p) for p in pieces]
    if not buffer.stopped:
        out.append(buffer.flush())
    return out, buffer.stopped


def test_stop_buffer_holds_back_partial_stop_strings() -> None:
    out, stopped = feed(["</s>"], ["Hello <", "/", "s> world"])
    assert out == ["Hello ", "", ""] and stopped


def test_stop_buffer_releases_text_that_turned_out_not_to_stop() -> None:
    out, stopped = feed(["</s>"], ["a <", "/x", " b"])
    assert "".join(out) == "a </x b" and not stopped
    assert out[0] == "a "


def test_stop_buffer_earliest_stop_wins_and_flushes_the_tail() -> None:
    out, stopped = feed(["world", "lo w"], ["hel", "lo world"])
    assert "".join(out) == "hel" and stopped
    out, stopped = feed(["xyz"], ["ends with x"])
    assert out == ["ends with ", "x"] and not stopped


def test_stop_buffer_without_stops_passes_through() -> None:
    assert feed([], ["a", "b"]) == (["a", "b", ""], False)


def test_relay_groups_fast_text_and_passes_the_end_at_once() -> None:
    async def main() -> None:
        hub = RelayHub(asyncio.get_running_loop(), interval_s=60)
        relay = hub.relay()
        await asyncio.to_thread(relay.emit, "The")  # the first piece goes at once
        assert await relay.get() == "The"

        def rest() -> None:  # these come within the interval: they wait for the end, then go together
            for piece in (" small", " cat"):
                relay.emit(piece)
            relay.emit(Finished(FinishReason.length, Usage(prompt_tokens=2, completion_tokens=3)))

        await asyncio.to_thread(rest)
        assert await relay.get() == " small cat"
        assert isinstance(await relay.get(), Finished)

        slow = RelayHub(asyncio.get_running_loop(), interval_s=0).relay()  # a model slower than the interval
        for piece in ("a", "b"):
            await asyncio.to_thread(slow.emit, piece)
            assert await slow.get() == piece

    asyncio.run(main())


def test_relay_hub_hands_every_generations_text_over_in_one_wake_up() -> None:
    async def main() -> None:
        hub = RelayHub(asyncio.get_running_loop(), interval_s=60)
        first, second = hub.relay(), hub.relay()
        for relay, piece in ((first, "A"), (second, "B")):  # each generation's first piece goes at once
            await asyncio.to_thread(relay.emit, piece)
            assert await relay.get() == piece

        def step() -> None:  # a batch step: both generations have text, within the interval
            first.emit("a")
            second.emit("b")

        await asyncio.to_thread(step)
        await asyncio.sleep(0.05)
        assert first.events.empty() and second.events.empty()  # waiting for the next wake-up
        # the first generation ends: that wake-up carries the second one's text too
        await asyncio.to_thread(first.emit, RuntimeError("the engine failed"))
        assert await first.get() == "a"
        assert isinstance(await first.get(), RuntimeError)
        assert await asyncio.wait_for(second.get(), 1) == "b"

    asyncio.run(main())
