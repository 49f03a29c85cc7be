"""Simulated volunteers: the reusable loop against an in-process backend, and what they write."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI

from oasst.backend.app import create_app
from oasst.backend.db import Database
from oasst.backend.settings import Settings
from oasst.cli.simulate import (
    SimulationError,
    SimulationProgress,
    SimulationReport,
    make_interaction,
    make_labels,
    make_text,
    run_simulation,
)
from oasst.client import BackendClient
from oasst.protocol.common import Conversation, ConversationMessage, TextLabel, User
from oasst.protocol.tasks import (
    InitialPromptTask,
    LabelAssistantReplyTask,
    MessageRanking,
    RankAssistantRepliesTask,
    TextLabels,
    TextReplyToMessage,
)
from tests.conftest import Keys, make_test_settings

TINY_TREES = {
    "goal_tree_size": 3,
    "num_reviews_initial_prompt": 1,
    "num_reviews_reply": 1,
    "num_required_rankings": 1,
    "max_active_trees": 2,
}


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_test_settings(database_url, tree_manager=TINY_TREES, rate_limits={"enabled": False})


@pytest.fixture
def app(settings: Settings, database: Database) -> FastAPI:
    return create_app(settings, database=database, migrate=False)


def factory(app: FastAPI, api_key: str) -> Callable[[], BackendClient]:
    return lambda: BackendClient("http://backend.test", api_key, transport=httpx.ASGITransport(app=app))


def test_three_volunteers_finish_a_tree(app: FastAPI, keys: Keys) -> None:
    seen: list[SimulationProgress] = []
    report = asyncio.run(
        run_simulation(
            factory(app, keys.trusted),
            3,
            until_ready=1,
            duration=120,  # a safety net: the tree is done long before
            seed=7,
            poll_interval=0.1,
            no_task_backoff=0.02,
            on_progress=seen.append,
        )
    )
    assert report.stopped_by == "until_ready", report
    assert report.trees_ready is not None and report.trees_ready >= 1
    assert report.state_counts is not None and report.state_counts["ready_for_export"] >= 1
    done = report.tasks_by_type
    assert done["initial_prompt"] >= 1 and done["assistant_reply"] >= 1
    assert done["label_initial_prompt"] >= 1 and done["label_assistant_reply"] >= 1
    assert set(done) <= {
        "initial_prompt",
        "assistant_reply",
        "prompter_reply",
        "label_initial_prompt",
        "label_assistant_reply",
        "label_prompter_reply",
        "rank_assistant_replies",
    }
    assert set(report.errors_by_code) <= {1006}, report.error_examples  # only "no task right now"
    assert len(report.latencies_s["request"]) >= report.cycles
    assert len(report.latencies_s["interaction"]) == report.cycles
    assert set(report.latency_ms("ack")) == {50, 95, 99}
    assert report.cycles_per_s > 0
    assert seen and 1 <= (seen[-1].trees_ready or 0) <= report.trees_ready


def test_duration_only_with_an_untrusted_key(app: FastAPI, keys: Keys) -> None:
    """Without a trusted key ready trees cannot be counted: a duration run still works, with a note."""
    report = asyncio.run(run_simulation(factory(app, keys.untrusted), 2, duration=0.5, seed=1))
    assert report.stopped_by == "duration"
    assert report.trees_ready is None
    assert report.tasks_by_type["initial_prompt"] >= 1
    assert "trusted API key" in report.notes[0]


def test_until_ready_needs_a_trusted_key(app: FastAPI, keys: Keys) -> None:
    with pytest.raises(SimulationError, match="needs a trusted API key"):
        asyncio.run(run_simulation(factory(app, keys.untrusted), 1, until_ready=1))


def test_a_bad_key_stops_the_simulation(app: FastAPI) -> None:
    with pytest.raises(SimulationError, match="refused the API key"):
        asyncio.run(run_simulation(factory(app, "wrong"), 2, duration=5))


def test_an_unreachable_backend_is_reported() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def make() -> BackendClient:
        return BackendClient("http://nowhere.test", "k", transport=httpx.MockTransport(refuse))

    with pytest.raises(SimulationError, match="Is the backend running"):
        asyncio.run(run_simulation(make, 1, duration=5))


# -- what volunteers write ---------------------------------------------------------------------------

USER = User(id="sim-0", display_name="Sim", auth_method="local")


def conversation(n: int) -> Conversation:
    return Conversation(
        messages=[ConversationMessage(text=f"m{i}", is_assistant=i % 2 == 1) for i in range(n)]
    )


def test_texts_are_unique_and_plausible() -> None:
    rng = random.Random(0)
    prompts = [make_text(rng, assistant=False, tag=f"t{i}") for i in range(200)]
    replies = [make_text(rng, assistant=True, tag=f"t{i}") for i in range(200)]
    assert len(set(prompts)) == len(set(replies)) == 200
    assert all(p.split(" (")[0].rstrip(".").endswith("?") or "?" in p for p in prompts)
    assert all(20 <= len(t) <= 2000 for t in prompts + replies)
    assert sum(len(r) for r in replies) > sum(len(p) for p in prompts)


def test_labels_include_every_mandatory_label_and_mostly_accept() -> None:
    rng = random.Random(1)
    valid = ["spam", "lang_mismatch", "quality", "humor", "fails_task", "not_a_label"]
    sets = [make_labels(rng, valid, ["spam", "lang_mismatch"]) for _ in range(500)]
    assert all({TextLabel.spam, TextLabel.lang_mismatch} <= set(labels) for labels in sets)
    assert all(set(labels) <= {TextLabel(v) for v in valid[:-1]} for labels in sets)
    assert all(0 <= v <= 1 for labels in sets for v in labels.values())
    spam = [labels[TextLabel.spam] for labels in sets]
    assert 0.85 * len(spam) < spam.count(0.0) < len(spam)


def test_interactions_answer_their_tasks() -> None:
    rng = random.Random(2)
    prompt = make_interaction(InitialPromptTask(), USER, "fe-1", rng, lang="de", tag="x")
    assert isinstance(prompt, TextReplyToMessage)
    assert (prompt.message_id, prompt.lang) == ("fe-1", "de")
    assert prompt.user_message_id != "fe-1"

    replies = [ConversationMessage(id=uuid.uuid4(), text=f"r{i}", is_assistant=True) for i in range(4)]
    rank_task = RankAssistantRepliesTask(
        conversation=conversation(1),
        replies=[r.text for r in replies],
        reply_messages=replies,
        message_tree_id=uuid.uuid4(),
        ranking_parent_id=uuid.uuid4(),
        reveal_synthetic=False,
    )
    ranking = make_interaction(rank_task, USER, "fe-2", rng, lang="en", tag="x")
    assert isinstance(ranking, MessageRanking)
    assert sorted(ranking.ranking) == [0, 1, 2, 3]

    label_task = LabelAssistantReplyTask(
        message_id=uuid.uuid4(),
        valid_labels=["spam", "quality"],
        mandatory_labels=["spam"],
        conversation=conversation(2),
    )
    labels = make_interaction(label_task, USER, "fe-3", rng, lang="en", tag="x")
    assert isinstance(labels, TextLabels)
    assert (labels.message_id, labels.task_id) == (label_task.message_id, label_task.id)
    assert TextLabel.spam in labels.labels

    empty = rank_task.model_copy(update={"reply_messages": []})
    assert make_interaction(empty, USER, "fe-4", rng, lang="en", tag="x") is None


def test_report_percentiles() -> None:
    report = SimulationReport(users=1, elapsed_s=2.0)
    report.latencies_s["request"] = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    report.tasks_by_type.update({"initial_prompt": 3, "label_initial_prompt": 1})
    assert report.latency_ms("request") == pytest.approx({50: 50.0, 95: 95.0, 99: 99.0})
    assert report.latency_ms("ack") == {}
    assert (report.cycles, report.cycles_per_s) == (4, 2.0)
