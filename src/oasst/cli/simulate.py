"""Simulated volunteers working through the task protocol, for demos, smoke tests and load benchmarks.

Each volunteer is an asyncio task with its own end user, running the cycle a frontend runs:
``POST /tasks/`` (random) → ``/tasks/{id}/ack`` with a fresh frontend id → ``/tasks/interaction``
(a unique text reply of plausible length, labels with every mandatory label and mostly-accepting values,
or a random ranking). A task that cannot be completed is nacked; "no task available" (error 1006) and
throttling back off briefly. The run stops when ``until_ready`` new trees reached ``ready_for_export``
(polled from the trusted ``/stats/tree_manager/state_counts``), when ``duration`` ends, or when ``stop``
is set. The per-call latencies are kept in the report, which ``bench/backend_load.py`` reuses.

This module is the logic only; the ``oasst simulate`` command wraps it with a progress bar.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from oasst.client import ApiErrorCode, BackendClient, Interaction, OasstApiError, OasstConnectionError
from oasst.protocol.common import CreateFrontendUserRequest, TextLabel, User
from oasst.protocol.tasks import (
    AnyTask,
    AssistantReplyTask,
    InitialPromptTask,
    LabelAssistantReplyTask,
    LabelInitialPromptTask,
    LabelPrompterReplyTask,
    MessageRanking,
    PrompterReplyTask,
    RankAssistantRepliesTask,
    RankPrompterRepliesTask,
    TextLabels,
    TextReplyToMessage,
)

READY_STATE = "ready_for_export"
CALLS = ("request", "ack", "interaction")

# Errors after which going on makes no sense for anyone: the key or the users are refused.
_FATAL_CODES = {
    ApiErrorCode.API_CLIENT_NOT_AUTHORIZED,
    ApiErrorCode.USER_HAS_NOT_ACCEPTED_TOS,
    ApiErrorCode.USER_DISABLED,
}
_MAX_CONSECUTIVE_CONNECTION_ERRORS = 5


class SimulationError(Exception):
    """The simulation cannot run (bad key, missing endpoint, unreachable backend); says what to do."""


@dataclass
class SimulationProgress:
    """A snapshot handed to ``on_progress`` about twice a second."""

    elapsed_s: float
    tasks_done: int
    errors: int
    trees_ready: int | None  # new ready_for_export trees since the start; None if unknown


@dataclass
class SimulationReport:
    """What a simulation did. Latencies are in seconds, one entry per successful call."""

    users: int
    elapsed_s: float = 0.0
    tasks_by_type: Counter[str] = field(default_factory=Counter)
    errors_by_code: Counter[int] = field(default_factory=Counter)
    error_examples: dict[int, str] = field(default_factory=dict)
    nacks: int = 0
    trees_ready: int | None = None
    state_counts: dict[str, int] | None = None
    latencies_s: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in CALLS})
    stopped_by: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def cycles(self) -> int:
        """Completed request → ack → interaction cycles."""
        return sum(self.tasks_by_type.values())

    @property
    def errors(self) -> int:
        return sum(self.errors_by_code.values())

    @property
    def cycles_per_s(self) -> float:
        return self.cycles / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def latency_ms(self, call: str, percentiles: tuple[int, ...] = (50, 95, 99)) -> dict[int, float]:
        """Nearest-rank percentiles of one call's latency, in milliseconds (empty if no calls)."""
        values = sorted(self.latencies_s.get(call, []))
        if not values:
            return {}
        result = {}
        for p in percentiles:
            rank = max(1, -(-p * len(values) // 100))  # ceil(p/100 * n), at least 1
            result[p] = values[rank - 1] * 1000
        return result

    def record_error(self, exc: OasstApiError) -> None:
        self.errors_by_code[exc.error_code] += 1
        self.error_examples.setdefault(exc.error_code, exc.message)


# -- what a volunteer writes -------------------------------------------------------------------------

_VOCABULARY = """
time people way year day thing world life hand part child eye place work week case point number
group problem fact water book story question answer idea reason example system program city house
garden music language history science health energy market student teacher friend family river
mountain window computer recipe bread coffee travel budget method result plan project lesson make
take know think see come want look use find give tell ask seem feel try leave call explain learn
improve compare describe build cook write read grow choose keep start help show prepare good new
first long great little own other old right big high different small large next early simple useful
careful quick clear common important possible better easy safe fresh quiet warm often usually always
really also still just very quite maybe probably especially together
"""
_WORDS = tuple(_VOCABULARY.split())
_OPENERS = ("How can I", "What is the best way to", "Could you explain how to", "Why do people", "Can you")


def _sentence(rng: random.Random, low: int, high: int) -> str:
    words = rng.choices(_WORDS, k=rng.randint(low, high))
    return words[0].capitalize() + " " + " ".join(words[1:])


def make_text(rng: random.Random, *, assistant: bool, tag: str) -> str:
    """A unique text of plausible length: a question for prompters, a few sentences for assistants."""
    if assistant:
        body = ". ".join(_sentence(rng, 6, 16) for _ in range(rng.randint(2, 6)))
        return f"{body}. ({tag})"
    question = f"{rng.choice(_OPENERS)} {' '.join(rng.choices(_WORDS, k=rng.randint(4, 12)))}?"
    if rng.random() < 0.5:
        question += " " + _sentence(rng, 5, 12) + "."
    return f"{question} ({tag})"


def make_labels(rng: random.Random, valid: list[str], mandatory: list[str] | None) -> dict[TextLabel, float]:
    """Every mandatory label plus a random subset of the valid ones, with mostly-accepting values."""
    known = {label.value for label in TextLabel}
    chosen = [n for n in valid if n in known and (n in (mandatory or []) or rng.random() < 0.5)]
    chosen += [n for n in mandatory or [] if n in known and n not in chosen]
    labels: dict[TextLabel, float] = {}
    for name in chosen:
        if name == TextLabel.spam:
            value = 1.0 if rng.random() < 0.05 else 0.0
        elif name == TextLabel.lang_mismatch:
            value = 1.0 if rng.random() < 0.03 else 0.0
        else:
            value = round(rng.random(), 2)
        labels[TextLabel(name)] = value
    return labels


def make_interaction(
    task: AnyTask, user: User, frontend_id: str, rng: random.Random, *, lang: str, tag: str
) -> Interaction | None:
    """The answer a volunteer gives to ``task`` (acked as ``frontend_id``); None if it cannot answer."""
    if isinstance(task, InitialPromptTask | PrompterReplyTask | AssistantReplyTask):
        return TextReplyToMessage(
            user=user,
            message_id=frontend_id,
            user_message_id=f"{frontend_id}-reply",
            text=make_text(rng, assistant=isinstance(task, AssistantReplyTask), tag=tag),
            lang=lang,
        )
    if isinstance(task, RankAssistantRepliesTask | RankPrompterRepliesTask):
        n = len(task.reply_messages)
        if n == 0:
            return None
        return MessageRanking(user=user, message_id=frontend_id, ranking=rng.sample(range(n), n))
    if isinstance(task, LabelInitialPromptTask | LabelPrompterReplyTask | LabelAssistantReplyTask):
        labels = make_labels(rng, task.valid_labels, task.mandatory_labels)
        if not labels:
            return None
        return TextLabels(user=user, message_id=task.message_id, task_id=task.id, labels=labels)
    return None


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class _VolunteerState:
    throttled: int = 0  # rate-limit answers in a row


class _Run:
    def __init__(
        self,
        report: SimulationReport,
        stop: asyncio.Event,
        *,
        lang: str,
        no_task_backoff: float,
        run_tag: str,
    ) -> None:
        self.report = report
        self.stop = stop
        self.lang = lang
        self.no_task_backoff = no_task_backoff
        self.run_tag = run_tag
        self.serial = 0

    async def pause(self, seconds: float) -> None:
        """Sleep, but wake up at once when the run stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)

    async def volunteer(self, client: BackendClient, user: User, rng: random.Random) -> None:
        connection_errors = 0
        state = _VolunteerState()
        while not self.stop.is_set():
            try:
                await self.cycle(client, user, rng, state)
                connection_errors = 0
            except OasstConnectionError as exc:
                connection_errors += 1
                self.report.record_error(exc)
                if connection_errors >= _MAX_CONSECUTIVE_CONNECTION_ERRORS:
                    raise SimulationError(f"{exc}. Is the backend running at that URL?") from exc
                await self.pause(0.5)

    async def cycle(
        self, client: BackendClient, user: User, rng: random.Random, state: _VolunteerState
    ) -> None:
        latencies = self.report.latencies_s
        try:
            started = time.perf_counter()
            task = await client.request_task(user, lang=self.lang)
            latencies["request"].append(time.perf_counter() - started)
            state.throttled = 0
        except OasstConnectionError:
            raise
        except OasstApiError as exc:
            self.report.record_error(exc)
            await self.on_request_error(exc, rng, state)
            return

        frontend_id = f"sim-{uuid.uuid4().hex}"
        try:
            started = time.perf_counter()
            await client.ack_task(task.id, frontend_id)
            latencies["ack"].append(time.perf_counter() - started)
        except OasstConnectionError:
            raise
        except OasstApiError as exc:
            self.report.record_error(exc)
            await self.nack(client, task, f"ack failed: {exc.message}")
            return

        self.serial += 1
        tag = f"sim {self.run_tag}-{self.serial}"
        interaction = make_interaction(task, user, frontend_id, rng, lang=self.lang, tag=tag)
        if interaction is None:
            await self.nack(client, task, f"the simulator cannot do {task.type} tasks")
            return
        try:
            started = time.perf_counter()
            await client.post_interaction(interaction)
            latencies["interaction"].append(time.perf_counter() - started)
        except OasstConnectionError:
            raise
        except OasstApiError as exc:
            self.report.record_error(exc)
            await self.nack(client, task, f"interaction failed: {exc.message}")
            return
        self.report.tasks_by_type[task.type] += 1

    async def on_request_error(self, exc: OasstApiError, rng: random.Random, state: _VolunteerState) -> None:
        if exc.error_code in _FATAL_CODES or exc.status == 403:
            raise SimulationError(f"The backend refused the simulation: {exc}")
        if exc.error_code == ApiErrorCode.TASK_REQUESTED_TYPE_NOT_AVAILABLE:
            await self.pause(self.no_task_backoff * (0.5 + rng.random()))
        elif exc.status == 429 or exc.error_code == ApiErrorCode.TASK_TOO_MANY_PENDING:
            # rate limited: back off exponentially (1 s, 2 s, ... up to 30 s) until a request goes through
            state.throttled += 1
            await self.pause(min(30.0, 2.0 ** (state.throttled - 1)) * (0.5 + rng.random()))
        else:
            await self.pause(0.05)

    async def nack(self, client: BackendClient, task: AnyTask, reason: str) -> None:
        try:
            await client.nack_task(task.id, reason[:1000])
            self.report.nacks += 1
        except OasstConnectionError:
            raise
        except OasstApiError as exc:
            self.report.record_error(exc)


async def _ready_count(client: BackendClient) -> dict[str, int]:
    try:
        return await client.tree_state_counts()
    except OasstConnectionError:
        raise
    except OasstApiError as exc:
        if exc.status == 404:
            raise SimulationError(
                "This backend has no GET /api/v1/stats/tree_manager/state_counts endpoint, so ready trees "
                "cannot be counted: run with a duration instead of a number of ready trees."
            ) from exc
        if exc.status == 403:
            raise SimulationError(
                "Counting ready trees (GET /api/v1/stats/tree_manager/state_counts) needs a trusted API key: "
                "use one (e.g. the key `oasst up` prints, or `oasst keys create --trusted`) or run with a "
                f"duration instead. ({exc})"
            ) from exc
        raise


async def _baseline(monitor: BackendClient, report: SimulationReport, *, required: bool) -> int | None:
    """Trees ready before the run (None when they cannot be counted and counting is optional)."""
    try:
        return (await _ready_count(monitor)).get(READY_STATE, 0)
    except OasstConnectionError as exc:
        raise SimulationError(f"{exc}. Is the backend running at that URL?") from exc
    except SimulationError as exc:
        if required:
            raise
        report.notes.append(str(exc))
        return None


async def _upsert(client: BackendClient, user: User) -> None:
    request = CreateFrontendUserRequest(**user.model_dump(), tos_acceptance=True)
    try:
        await client.upsert_frontend_user(request)
    except OasstConnectionError as exc:
        raise SimulationError(f"{exc}. Is the backend running at that URL?") from exc
    except OasstApiError as exc:
        if exc.status == 403:
            raise SimulationError(f"The backend refused the API key: {exc}") from exc
        raise SimulationError(f"Could not register simulated user {user.id!r}: {exc}") from exc


async def run_simulation(
    client_factory: Callable[[], BackendClient],
    users: int,
    *,
    until_ready: int | None = None,
    duration: float | None = None,
    lang: str = "en",
    seed: int | None = None,
    user_prefix: str = "sim",
    poll_interval: float = 0.5,
    no_task_backoff: float = 0.2,
    on_progress: Callable[[SimulationProgress], None] | None = None,
    stop: asyncio.Event | None = None,
) -> SimulationReport:
    """Run ``users`` simulated volunteers until ``until_ready`` new trees are ready, ``duration`` seconds
    pass, or ``stop`` is set. ``client_factory`` makes one client per volunteer (and one for polling);
    each is closed at the end. Raises :class:`SimulationError` when the run cannot go on."""
    if users < 1:
        raise ValueError("users must be at least 1")
    if until_ready is None and duration is None and stop is None:
        raise ValueError("give until_ready, duration or stop, or the simulation never ends")
    stop = stop or asyncio.Event()
    report = SimulationReport(users=users)
    run = _Run(report, stop, lang=lang, no_task_backoff=no_task_backoff, run_tag=uuid.uuid4().hex[:8])
    seeder = random.Random(seed)
    people = [
        User(id=f"{user_prefix}-{i}", display_name=f"Simulated volunteer {i}", auth_method="local")
        for i in range(users)
    ]
    clients = [client_factory() for _ in range(users)]
    monitor = client_factory()
    try:
        baseline = await _baseline(monitor, report, required=until_ready is not None)
        await asyncio.gather(*(_upsert(c, u) for c, u in zip(clients, people, strict=True)))

        started = time.monotonic()
        workers = [
            asyncio.create_task(run.volunteer(c, u, random.Random(seeder.random())), name=f"volunteer-{u.id}")
            for c, u in zip(clients, people, strict=True)
        ]
        try:
            report.stopped_by = await _watch(
                run, monitor, workers, started, baseline, until_ready, duration, poll_interval, on_progress
            )
        finally:
            stop.set()
            await _finish(workers)
            report.elapsed_s = time.monotonic() - started
        for worker in workers:  # a volunteer that gave up says why
            failure = None if worker.cancelled() else worker.exception()
            if failure is not None:
                raise failure
        if report.errors_by_code[ApiErrorCode.TOO_MANY_REQUESTS]:
            report.notes.append(
                "The backend rate-limited the volunteers (error 429). For simulations and load tests, run "
                "it with OASST_RATE_LIMITS__ENABLED=false."
            )
        if baseline is not None:
            with contextlib.suppress(OasstApiError):
                report.state_counts = await monitor.tree_state_counts()
                report.trees_ready = report.state_counts.get(READY_STATE, 0) - baseline
        return report
    finally:
        await asyncio.gather(*(c.aclose() for c in [*clients, monitor]), return_exceptions=True)


async def _watch(
    run: _Run,
    monitor: BackendClient,
    workers: list[asyncio.Task[None]],
    started: float,
    baseline: int | None,
    until_ready: int | None,
    duration: float | None,
    poll_interval: float,
    on_progress: Callable[[SimulationProgress], None] | None,
) -> str:
    """Poll progress until a stop condition holds; return which one."""
    report = run.report
    ready: int | None = None
    while True:
        elapsed = time.monotonic() - started
        if baseline is not None:
            with contextlib.suppress(OasstApiError):
                ready = (await monitor.tree_state_counts()).get(READY_STATE, 0) - baseline
        report.trees_ready = ready
        if on_progress is not None:
            on_progress(SimulationProgress(elapsed, report.cycles, report.errors, ready))
        if until_ready is not None and ready is not None and ready >= until_ready:
            return "until_ready"
        if duration is not None and elapsed >= duration:
            return "duration"
        if run.stop.is_set():
            return "stopped"
        if any(w.done() for w in workers):
            return "volunteer_failed"
        timeout = poll_interval if duration is None else max(0.0, min(poll_interval, duration - elapsed))
        await run.pause(timeout)


async def _finish(workers: list[asyncio.Task[None]], grace_s: float = 5.0) -> None:
    """Let volunteers end their current call, then cancel whoever is still busy."""
    _, pending = await asyncio.wait(workers, timeout=grace_s)
    for worker in pending:
        worker.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
