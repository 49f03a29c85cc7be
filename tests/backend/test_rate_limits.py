"""Task-request rate limits, per user and per reply type, on Redis and in memory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from oasst.backend.app import create_app
from oasst.backend.db import Database
from oasst.ratelimit import Limit, MemoryRateLimiter, RedisRateLimiter
from tests.backend.volunteers import Volunteer
from tests.conftest import Keys, make_test_settings


@pytest.fixture(params=["memory", "redis"])
def limited_client(
    request: pytest.FixtureRequest, database_url: str, database: Database, keys: Keys
) -> Iterator[TestClient]:
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    settings = make_test_settings(
        database_url,
        redis_url=redis_url,
        enforce_tos_acceptance=False,
        rate_limits={"user_requests": 5, "assistant_reply_requests": 1, "prompter_reply_requests": 1},
        tree_manager={"max_pending_tasks_per_user": 100, "num_reviews_initial_prompt": 1},
    )
    app = create_app(settings, database=database, migrate=False)
    app.state.rate_limiter.reset()
    with TestClient(app, headers={"X-API-Key": keys.trusted}) as http:
        yield http
    app.state.rate_limiter.reset()


def test_user_request_limit(limited_client: TestClient) -> None:
    volunteer, other = Volunteer(limited_client, "busy"), Volunteer(limited_client, "calm")
    statuses = [volunteer.request("initial_prompt").status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    response = volunteer.request("initial_prompt")
    assert response.json()["error_code"] == 429
    assert "Retry in" in response.json()["message"]
    assert 0 < int(response.headers["Retry-After"]) <= 240
    assert other.request("initial_prompt").status_code == 200  # budgets are per user


def test_reply_limit_also_applies_to_random_requests(limited_client: TestClient) -> None:
    author, writer, reviewer = (Volunteer(limited_client, n) for n in ("author", "writer", "reviewer"))
    for _ in range(2):
        author.work_once("initial_prompt")
    for _ in range(2):
        reviewer.work_once("label_initial_prompt")
    first = writer.request("assistant_reply")
    assert first.status_code == 200
    assert writer.request("assistant_reply").json()["error_code"] == 429
    # a random request must not hand out a reply once the reply budget is spent (the original let it)
    second = writer.request("random")
    assert second.status_code in (200, 503)
    if second.status_code == 200:
        assert second.json()["type"] not in ("assistant_reply", "prompter_reply")


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_limiter_windows(kind: str, request: pytest.FixtureRequest) -> None:
    limiter = (
        RedisRateLimiter(request.getfixturevalue("redis_url"), prefix="oasst:test:")
        if kind == "redis"
        else MemoryRateLimiter()
    )
    limiter.reset()
    limit = Limit(requests=2, interval_sec=60)
    assert [limiter.hit("k", limit) for _ in range(3)][:2] == [0, 0]
    assert limiter.exhausted("k", limit)
    assert not limiter.exhausted("other", limit)
    assert 0 < limiter.hit("k", limit) <= 60
    assert limiter.hit("drafts", limit, 2) == 0  # one call may count several requests
    assert limiter.hit("drafts", limit) > 0
    assert limiter.hit("many", limit, 3) > 0
    limiter.reset()
