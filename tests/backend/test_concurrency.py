"""Many volunteers at once on the same few trees never break a tree's invariants.

The original backend, under this kind of load, gave a node limited to 2 replies 11 of them, grew
trees meant to stop at 5 messages to 12, and raced its lottery into 503 errors.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from oasst.backend.app import create_app
from oasst.backend.db import Database
from oasst.backend.models import Message, MessageReaction, MessageTreeState, Task, TextLabels
from tests.backend.live_server import serve
from tests.conftest import Keys, make_test_settings

TREE_CONFIG = {
    "goal_tree_size": 5,
    "max_children_count": 2,
    "max_tree_depth": 3,
    "num_reviews_initial_prompt": 2,
    "num_reviews_reply": 2,
    "num_required_rankings": 2,
    "max_active_trees": 2,
    "p_activate_backlog_tree": 0.0,
}
VOLUNTEERS = 16
CYCLES_EACH = 25


def volunteer(base_url: str, key: str, name: str, failures: list[str], codes: Counter[int]) -> None:
    rng = random.Random(name)
    user = {"id": name, "display_name": name, "auth_method": "local"}
    with httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=60) as http:
        for n in range(CYCLES_EACH):
            response = http.post("/api/v1/tasks/", json={"type": "random", "user": user, "lang": "en"})
            if response.status_code != 200:
                codes[response.json()["error_code"]] += 1
                continue
            task = response.json()
            frontend_id = f"{name}-{n}"
            http.post(f"/api/v1/tasks/{task['id']}/ack", json={"message_id": frontend_id}).raise_for_status()
            body = answer(task, frontend_id, rng)
            done = http.post("/api/v1/tasks/interaction", json={**body, "user": user})
            if done.status_code >= 500:
                failures.append(f"{done.status_code} {done.text}")
            elif done.status_code != 200:
                codes[done.json()["error_code"]] += 1


def answer(task: dict[str, Any], frontend_id: str, rng: random.Random) -> dict[str, Any]:
    kind = task["type"]
    if kind.startswith("rank_"):
        order = list(range(len(task["reply_messages"])))
        rng.shuffle(order)
        return {"type": "message_ranking", "message_id": frontend_id, "ranking": order}
    if kind.startswith("label_"):
        labels = {name: 0.0 for name in task["valid_labels"]}
        return {
            "type": "text_labels",
            "message_id": task["message_id"],
            "task_id": task["id"],
            "labels": labels,
        }
    return {
        "type": "text_reply_to_message",
        "message_id": frontend_id,
        "user_message_id": f"m-{frontend_id}",
        "text": f"{kind} {uuid.uuid4()}",
        "lang": "en",
    }


@pytest.mark.slow
def test_concurrent_volunteers_keep_invariants(database_url: str, database: Database, keys: Keys) -> None:
    settings = make_test_settings(
        database_url,
        tree_manager=TREE_CONFIG,
        enforce_tos_acceptance=False,
        rate_limits={"enabled": False},
        db_pool_size=20,
    )
    app = create_app(settings, database=database, migrate=False)
    failures: list[str] = []
    codes: Counter[int] = Counter()
    with serve(app) as base_url:
        threads = [
            threading.Thread(target=volunteer, args=(base_url, keys.trusted, f"v{i}", failures, codes))
            for i in range(VOLUNTEERS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []
    assert codes[4] == 0, "no transaction may run out of retries"
    check_invariants(database)


def check_invariants(database: Database) -> None:
    def load(session: Any) -> tuple[Any, ...]:
        return (
            session.scalars(select(Message)).all(),
            session.scalars(select(MessageTreeState)).all(),
            session.scalars(select(MessageReaction)).all(),
            session.scalars(select(TextLabels)).all(),
            session.scalars(select(Task)).all(),
        )

    messages, trees, reactions, labels, tasks = database.read(load)
    assert trees, "the volunteers created no tree at all"
    by_id = {m.id: m for m in messages}
    children: dict[uuid.UUID, list[Message]] = {}
    for m in messages:
        if m.parent_id is not None:
            children.setdefault(m.parent_id, []).append(m)
    tree_by_id = {t.message_tree_id: t for t in trees}
    ranked = Counter(mid for r in reactions for mid in r.payload["ranked_message_ids"])
    reviews = Counter(label.message_id for label in labels if label.task_id is not None)
    for m in messages:
        kids = children.get(m.id, [])
        assert m.children_count == len(kids), f"children_count of {m.id}"
        live = [k for k in kids if not k.deleted and k.review_result is not False]
        limit = tree_by_id[m.message_tree_id].max_children_count
        if m.role == "assistant":
            limit = min(limit, 1)
        assert len(live) <= limit, f"{m.id} has {len(live)} replies, limit {limit}"
        authors = [k.user_id for k in kids]
        assert len(authors) == len(set(authors)), f"a user replied twice to {m.id}"
        assert m.ranking_count == ranked[str(m.id)], f"ranking_count of {m.id}"
        assert m.review_count == reviews[m.id], f"review_count of {m.id}"
        assert m.depth == (0 if m.parent_id is None else by_id[m.parent_id].depth + 1)
    for tree in trees:
        valid = [
            m
            for m in messages
            if m.message_tree_id == tree.message_tree_id and not m.deleted and m.review_result is not False
        ]
        assert len(valid) <= tree.goal_tree_size, f"tree {tree.message_tree_id} grew to {len(valid)}"
        assert tree.active == (
            tree.state in {"initial_prompt_review", "growing", "ranking", "ready_for_scoring"}
        )
        accepted = [m for m in valid if m.review_result]
        if tree.state == "ready_for_export":
            assert len(accepted) >= tree.goal_tree_size
    writing_tasks = [
        t for t in tasks if t.done and t.task_type in ("initial_prompt", "prompter_reply", "assistant_reply")
    ]
    assert len(writing_tasks) == len(messages), "every message comes from exactly one done task"
    assert any(t.state == "ready_for_export" for t in trees), "no tree was finished under load"
