"""Inference speed: the same model and prompts, the engine called directly in this process versus the
whole stack (client → server → queue → worker → SSE), at concurrency 1 and 8, with 1 and 2 workers.

    OMP_NUM_THREADS=1 python bench/inference.py                 # bootstraps a tiny model first
    python bench/inference.py --model models/sft --tokens 128   # any model directory

Prints completion tokens/s (all requests together) and time to first token (median, p90) per run, then
the ratios the issue asks for: stack/direct throughput (target ≥ 0.90), the stack's added time to first
token at concurrency 1 (target < 20 ms), and 2 workers / 1 worker throughput — with the workers' usual
slots, and engine-bound: one slot per worker and 8 requests at once, where the target is ≈ 2 (each worker
is its own process, so this needs a free core or GPU per worker).

Every path is up for the whole run. At concurrency 1 each request runs on every path in turn (the
order alternating per request), so direct and stack see the machine in the same state request by
request; at concurrency 8 each round runs every path back to back, alternating their order. Each ratio
is taken within one round, so a machine whose speed drifts (a VM) does not tilt it; the median round is
reported, with every round's figure beside it. Sampling is seeded per request, so both paths
generate exactly the same tokens. The server runs as its own process (`oasst inference serve`, SQLite,
in-process queue) and each worker as `oasst worker run`.

On Linux with at least two CPUs the processes are pinned as they would be deployed, the engine apart from
the server: the server and the bench's client on CPU 0, the engine (the direct engine's threads, or a
worker process) on CPU 1 — on as many CPUs as it has torch threads (`OMP_NUM_THREADS`) — and further
workers on CPUs of their own where the machine has them; a stack
with more workers than free CPUs runs unpinned, and so does its engine-bound partner. `--no-pin` leaves
every process to the operating system's scheduler.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from oasst.inference.protocol import ChatTurn, Role, SamplingParameters, WorkRequest
from oasst.inference.worker.engines import Engine, Finished

if TYPE_CHECKING:
    from oasst.inference.worker.engine_openai import OpenAIUpstreamEngine

MODEL_NAME = "bench-model"
ROOT_TOKEN = "bench-root-token-0123456789"
TOPICS = ["cats", "the sea", "bread", "mountains", "rain", "music", "gardens", "trains"]


@dataclass
class Result:
    label: str
    concurrency: int
    tokens: int
    seconds: float
    ttft_s: list[float]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    def row(self) -> str:
        ttft = sorted(self.ttft_s)
        p50 = statistics.median(ttft) * 1000
        p90 = ttft[min(len(ttft) - 1, int(0.9 * len(ttft)))] * 1000
        return (
            f"{self.label:<22} {self.concurrency:>4} {self.tokens:>7} {self.seconds:>7.2f} "
            f"{self.tokens_per_s:>9.1f} {p50:>9.1f} {p90:>9.1f}"
        )


@dataclass(frozen=True)
class Layout:
    """Which CPUs the processes run on: ``infra`` (the server and the bench's client) and a set of CPUs per
    engine (as many as it has torch threads); empty sets leave a process to the scheduler."""

    infra: frozenset[int] = frozenset()
    engines: tuple[frozenset[int], ...] = ()
    everywhere: frozenset[int] = frozenset()  # every CPU this bench may use (for unpinned processes)

    @classmethod
    def for_engines(cls, n: int, pin: bool, threads: int = 1) -> Layout:
        """CPU 0 for the infrastructure and ``threads`` CPUs for each of ``n`` engines, or no pinning at all
        where the machine has too few CPUs (or ``pin`` is off)."""
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if not pin or len(cpus) < 1 + n * threads:
            return cls(everywhere=frozenset(cpus))
        engines = tuple(frozenset(cpus[1 + i * threads : 1 + (i + 1) * threads]) for i in range(n))
        return cls(frozenset(cpus[:1]), engines, frozenset(cpus))

    def engine(self, i: int) -> frozenset[int]:
        return self.engines[i] if i < len(self.engines) else frozenset()

    def describe(self) -> str:
        if not self.infra:
            return "unpinned"
        engines = ", ".join("CPU " + "+".join(map(str, sorted(cpus))) for cpus in self.engines)
        return f"server and client on CPU {min(self.infra)}, engines on {engines}"

    def pin_to(self, cpus: frozenset[int]) -> Callable[[], None] | None:
        """A ``preexec_fn`` that pins a child process (and every thread it starts) to ``cpus``, or lets it
        run anywhere (not on the pinned client's CPU it would inherit) where ``cpus`` is empty."""
        cpus = cpus or self.everywhere
        return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None

    def pin_direct_engine(self) -> None:
        """The bench's own threads: the main thread (the client's event loop) on the infrastructure CPU,
        every other one — the direct engine's decoding and tokenising threads and torch's own — on the
        first engine's CPUs."""
        if not self.infra:
            return
        main = threading.main_thread().native_id
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                os.sched_setaffinity(int(tid), self.infra if int(tid) == main else self.engine(0))


def requests(n: int, max_new_tokens: int, fixed: bool = False) -> list[WorkRequest]:
    # seeded sampling with no warpers: both paths draw the same tokens, and an untrained model (whose
    # greedy choice is to repeat the last prompt token, a role marker that ends the reply) runs on
    sampling = SamplingParameters(
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        repetition_penalty=1.0,
        max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens if fixed else 0,
    )
    return [
        WorkRequest(
            id=f"b{i}",
            model=MODEL_NAME,
            messages=[
                ChatTurn(role=Role.system, content="You are a helpful assistant."),
                ChatTurn(
                    role=Role.user, content=f"Tell me something about {TOPICS[i % len(TOPICS)]}, please."
                ),
            ],
            sampling=sampling.model_copy(update={"seed": i}),
        )
        for i in range(n)
    ]


async def one_request(engine: Engine, req: WorkRequest) -> tuple[int, float, float]:
    """Run one request: (completion tokens, time to its first piece, its whole time). A reply that
    streamed nothing counts its whole time as its first-token time."""
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    async for event in engine.generate(req):
        if isinstance(event, Finished):
            tokens = event.usage.completion_tokens
        elif first is None and event:
            first = time.perf_counter() - started
    took = time.perf_counter() - started
    return tokens, (first if first is not None else took), took


async def drive(engine: Engine, reqs: list[WorkRequest], concurrency: int, label: str) -> Result:
    """Run ``reqs`` through ``engine`` with ``concurrency`` in flight; time to first piece per request."""
    queue = list(reqs)
    ttft: list[float] = []
    tokens = 0

    async def client() -> None:
        nonlocal tokens
        while queue:
            count, first, _took = await one_request(engine, queue.pop())
            tokens += count
            ttft.append(first)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return Result(label, concurrency, tokens, time.perf_counter() - started, ttft)


def bootstrap_model(out: Path) -> Path:
    import warnings

    from oasst.training.bootstrap import BootstrapConfig, bootstrap

    texts = [
        f"The {a} {b} likes {c} every {d}."
        for a in TOPICS
        for b in TOPICS
        for c in TOPICS
        for d in ("day", "night")
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # untrained: it rarely ends a reply early, so every run generates (nearly) max_new_tokens tokens
        return bootstrap(texts, BootstrapConfig(output_dir=str(out), vocab_size=4096, pretrain_steps=0))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def stack(
    model: Path, workdir: Path, workers: int, max_parallel: int, layout: Layout
) -> Iterator[tuple[str, str]]:
    """The inference server and ``workers`` worker processes (pinned by ``layout``); yields (base URL,
    API key)."""
    import httpx

    from oasst.inference.server.db import Database, make_engine
    from oasst.inference.server.migrate import upgrade
    from oasst.inference.server.services.keys import create_key
    from oasst.inference.server.settings import Settings

    db_url = f"sqlite:///{workdir / f'inference-{workers}.db'}"
    greedy = {"do_sample": False, "temperature": 0.0, "top_k": 0, "repetition_penalty": 1.0}
    env = {
        **os.environ,
        "OASST_INFERENCE_DATABASE_URL": db_url,
        "OASST_INFERENCE_DEFAULT_MODEL": MODEL_NAME,
        "OASST_INFERENCE_MODEL_PRESETS": json.dumps({"*": {"greedy": greedy}}),
        "OASST_INFERENCE_USER_TOKEN_SECRET": "bench-secret-0123456789abcdef0123456789",
        "OASST_INFERENCE_QUEUE_MAX_SIZE": "1000",
        "OASST_INFERENCE_ROOT_TOKENS": ROOT_TOKEN,
    }
    settings = Settings(database_url=db_url)
    database = Database(make_engine(settings))
    upgrade(database.engine)
    worker_key = database.write(lambda s: create_key(s, kind="worker", name="bench")[1])
    api_key = database.write(lambda s: create_key(s, kind="api", name="bench")[1])
    database.dispose()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cli = [sys.executable, "-m", "oasst.cli.main"]
    procs = [
        subprocess.Popen(
            [*cli, "inference", "serve", "--port", str(port), "--log-level", "warning"],
            env=env,
            preexec_fn=layout.pin_to(layout.infra),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        wait_http(f"{url}/health")
        for i in range(workers):
            procs.append(
                subprocess.Popen(
                    [
                        *cli,
                        *("worker", "run", "--server", url, "--key", worker_key, "--model", str(model)),
                        *(
                            "--model-name",
                            MODEL_NAME,
                            "--name",
                            f"bench-{i}",
                            "--max-parallel",
                            str(max_parallel),
                        ),
                    ],
                    env=env,
                    preexec_fn=layout.pin_to(layout.engine(i)),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 120
        while True:  # wait until every worker has said hello
            with contextlib.suppress(httpx.HTTPError):
                response = httpx.get(
                    f"{url}/admin/workers", headers={"Authorization": f"Bearer {ROOT_TOKEN}"}
                )
                if sum(w.get("model") == MODEL_NAME for w in response.json()) >= workers:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not connect")
            time.sleep(0.3)
        yield url, api_key
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def warm_up_requests(slots: int) -> list[WorkRequest]:
    """Enough short requests to occupy every generation slot once: each slot is a thread of its own,
    and on a GPU a thread's first forward pass sets up its CUDA state (cuBLAS handles and the like),
    which must not be timed."""
    return requests(slots, 16)


def stack_client(url: str, api_key: str, parallel: int) -> OpenAIUpstreamEngine:
    """An OpenAI client of the stack (the worker's upstream engine: streaming, extra sampling fields)."""
    from oasst.inference.worker.engine_openai import OpenAIUpstreamEngine

    return OpenAIUpstreamEngine(
        url, api_key=api_key, upstream_model=MODEL_NAME, max_parallel=parallel, extra_sampling=True
    )


async def warm_up(url: str, api_key: str, slots: int) -> None:
    warm = stack_client(url, api_key, slots)
    try:
        await drive(warm, warm_up_requests(slots), slots, "warm-up")
    finally:
        await warm.aclose()


async def through_stack(
    url: str, api_key: str, reqs: list[WorkRequest], concurrency: int, label: str, *, slots: int
) -> Result:
    await warm_up(url, api_key, slots)
    timed = stack_client(url, api_key, concurrency)
    try:
        return await drive(timed, reqs, concurrency, label)
    finally:
        await timed.aclose()


async def one_at_a_time(engines: dict[str, Engine], reqs: list[WorkRequest]) -> dict[str, Result]:
    """Concurrency 1 on every engine at once: each request runs on each engine in turn (the order
    alternating per request), so all of them see the machine in the same state, request by request;
    each engine's time is the sum of its requests' times."""
    seconds = dict.fromkeys(engines, 0.0)
    tokens = dict.fromkeys(engines, 0)
    ttft: dict[str, list[float]] = {name: [] for name in engines}
    for i, req in enumerate(reqs):
        for name in list(engines)[:: 1 if i % 2 == 0 else -1]:
            count, first, took = await one_request(engines[name], req)
            tokens[name] += count
            seconds[name] += took
            ttft[name].append(first)
    return {name: Result(name, 1, tokens[name], seconds[name], ttft[name]) for name in engines}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="A model directory (default: bootstrap a tiny one).")
    parser.add_argument("--requests", type=int, default=64, help="Requests per run.")
    parser.add_argument("--tokens", type=int, default=128, help="max_new_tokens per request.")
    parser.add_argument(
        "--max-parallel", type=int, default=8, help="Slots per worker (and the direct engine)."
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="Rounds; each runs every path once, back to back."
    )
    parser.add_argument(
        "--fixed-length",
        action="store_true",
        help="Every reply exactly --tokens long (min_tokens = max_tokens, as serving benchmarks fix it), "
        "instead of ending where the model ends it.",
    )
    parser.add_argument("--skip-stack", action="store_true", help="Only the direct engine.")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="Leave every process to the scheduler (default: the server and client on CPU 0, each engine "
        "on a CPU of its own where there are enough).",
    )
    args = parser.parse_args()

    from oasst.inference.worker.engine_transformers import TransformersEngine

    with tempfile.TemporaryDirectory(prefix="oasst-bench-") as tmp, contextlib.ExitStack() as stacks:
        workdir = Path(tmp)
        model = args.model or bootstrap_model(workdir / "model")
        engine = TransformersEngine.load(str(model), model_name=MODEL_NAME, max_parallel=args.max_parallel)
        print(
            f"model {model} on {engine.device}, context {engine.context_length}, {args.requests} requests "
            f"of {'exactly' if args.fixed_length else 'up to'} {args.tokens} tokens, seeded sampling, "
            f"max_parallel {args.max_parallel}, {args.rounds} rounds"
        )
        pin = not args.no_pin
        threads = int(os.environ.get("OMP_NUM_THREADS") or 1)  # torch threads per engine
        one, two = Layout.for_engines(1, pin, threads), Layout.for_engines(2, pin, threads)
        if one.infra:  # the client's event loop; the direct engine's threads move once they exist
            os.sched_setaffinity(0, one.infra)
        reqs = requests(args.requests, args.tokens, args.fixed_length)
        with_stack = not args.skip_stack and _server_available()
        # every stack is up for the whole run (idle ones cost nothing), so each round measures every path
        # within a minute or two of the others and a machine whose speed drifts (a VM) cannot tilt a ratio
        paths: dict[str, tuple[str, str, int]] = {}  # name -> (url, key, slots)
        # the engine-bound pair is compared with each other, so both run pinned only if both can
        layouts = {"direct": one, "stack, 1 worker": one, "stack, 2 workers": two}
        layouts |= {"1 slot, 1 worker": one if two.infra else two, "1 slot, 2 workers": two}
        if with_stack:
            for name, workers, slots in (
                ("stack, 1 worker", 1, args.max_parallel),
                ("stack, 2 workers", 2, args.max_parallel),
                ("1 slot, 1 worker", 1, 1),
                ("1 slot, 2 workers", 2, 1),
            ):
                sub = workdir / name.replace(" ", "").replace(",", "-")
                sub.mkdir()
                url, key = stacks.enter_context(stack(model, sub, workers, slots, layouts[name]))
                paths[name] = (url, key, workers * slots)
        print("layout: " + "; ".join(f"{name}: {layouts[name].describe()}" for name in ["direct", *paths]))
        runs: dict[tuple[str, int], list[Result]] = {}

        async def run_rounds() -> None:
            await drive(engine, warm_up_requests(args.max_parallel), args.max_parallel, "warm-up")
            one.pin_direct_engine()  # its threads exist now
            for round_ in range(args.rounds):
                # concurrency 1: request by request across the direct engine and the stacks
                clients: dict[str, Engine] = {"direct": engine}
                for name, (url, key, slots) in paths.items():
                    if not name.startswith("1 slot"):
                        await warm_up(url, key, slots)
                        clients[name] = stack_client(url, key, 1)
                for result in (await one_at_a_time(clients, reqs)).values():
                    runs.setdefault((result.label, 1), []).append(result)
                    print(f"  round {round_ + 1}: {result.row()}", flush=True)
                for client in clients.values():
                    if client is not engine:
                        await client.aclose()
                # concurrency 8: one run per path, back to back, the order alternating per round
                order = ["direct", *paths]
                for name in order if round_ % 2 == 0 else order[::-1]:
                    if name == "direct":
                        result = await drive(engine, reqs, 8, name)
                    else:
                        url, key, slots = paths[name]
                        result = await through_stack(url, key, reqs, 8, name, slots=slots)
                    runs.setdefault((name, 8), []).append(result)
                    print(f"  round {round_ + 1}: {result.row()}", flush=True)
            await engine.aclose()

        asyncio.run(run_rounds())
    print()
    print(
        f"{'path (median round)':<22} {'conc':>4} {'tokens':>7} {'secs':>7} {'tok/s':>9} {'ttft p50':>9} {'ttft p90':>9}"
    )
    for results in runs.values():
        print(sorted(results, key=lambda r: r.tokens_per_s)[len(results) // 2].row())
    if not paths:
        print(
            "\nthrough the stack: skipped"
            + ("" if args.skip_stack else " (the inference server is not installed)")
        )
        return

    def ratios(a: str, b: str, c: int) -> list[float]:
        """Per round, a's throughput over b's (measured back to back)."""
        return [x.tokens_per_s / y.tokens_per_s for x, y in zip(runs[a, c], runs[b, c], strict=True)]

    def summary(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} (rounds: {', '.join(f'{v:.2f}' for v in values)})"

    print()
    for c in (1, 8):
        print(
            f"concurrency {c}: stack/direct throughput {summary(ratios('stack, 1 worker', 'direct', c))} (target ≥ 0.90)"
        )
        print(
            f"               2 workers/1 worker {summary(ratios('stack, 2 workers', 'stack, 1 worker', c))}"
        )
    print(
        f"engine-bound (one slot per worker, concurrency 8): 2 workers/1 worker "
        f"{summary(ratios('1 slot, 2 workers', '1 slot, 1 worker', 8))} (target ≈ 2 with a free core per worker)"
    )
    added = [
        statistics.median(s.ttft_s) - statistics.median(d.ttft_s)
        for s, d in zip(runs["stack, 1 worker", 1], runs["direct", 1], strict=True)
    ]
    print(
        f"time to first token added by the stack at concurrency 1: {statistics.median(added) * 1000:.1f} ms "
        f"(rounds: {', '.join(f'{a * 1000:.1f}' for a in added)}; target < 20 ms)"
    )


def _server_available() -> bool:
    try:
        import oasst.inference.server.app  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
