"""Trollboard: the troll score from emojis, aborted prompts and labels received; ranking and filters."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from oasst.backend.db import Database
from oasst.backend.errors import ErrorCode
from oasst.backend.models import TreeState
from tests.backend.factories_stats import StatsFactory, build
from tests.conftest import Keys

TB = "/api/v1/trollboards"


def _trollboard(client: TestClient, time_frame: str = "total", **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"{TB}/{time_frame}", params=params)
    assert response.status_code == 200, response.text
    board: list[dict[str, Any]] = response.json()["trollboard"]
    return board


def _scenario(f: StatsFactory) -> None:
    reviewer = f.user("reviewer")
    troll = f.user("troll", enabled=False)
    # emojis: 3 red flags, 1 up, 3 down (over two messages); a deleted message's emojis are ignored
    f.message(troll, emojis={"+1": 1, "-1": 2, "red_flag": 2})
    f.message(troll, emojis={"-1": 1, "red_flag": 1, "rofl": 4})
    f.message(troll, emojis={"red_flag": 9}, deleted=True)
    spam = f.message(troll)  # a prompt the reviewers aborted
    f.tree_state(spam, TreeState.ABORTED_LOW_GRADE)
    # labels received on a message without any emoji (the original dropped these)
    labelled = f.message(troll)
    f.labels(reviewer, labelled, {"pii": 1.0, "hate_speech": 0.75, "not_appropriate": 0.25, "quality": 0.2})
    f.labels(reviewer, labelled, {"pii": 0.5, "spam": 1.0, "quality": 0.4, "lang_mismatch": 0.0})
    # troll score: 3*3 - 1 + 3 + 1 (spam prompt) + 2 (pii) + 1 (hate_speech) = 15

    # only labels, no emojis at all: still on the board
    quiet = f.user("quiet")
    f.labels(reviewer, f.message(quiet), {"political_content": 1.0, "sexual_content": 0.9})  # 2

    liked = f.user("liked")
    f.message(liked, emojis={"+1": 5})  # -5
    f.message(reviewer)  # no signal: not on the board


def test_troll_score_counts_emojis_spam_prompts_and_labels(
    app_client: TestClient, database: Database, keys: Keys
) -> None:
    build(database, keys.trusted, _scenario)
    assert app_client.post("/api/v1/leaderboards/update/total").status_code == 204

    board = _trollboard(app_client)
    assert [(r["username"], r["rank"], r["troll_score"]) for r in board] == [
        ("troll", 1, 15),
        ("quiet", 2, 2),
        ("liked", 3, -5),
    ]
    troll = board[0]
    assert (troll["red_flags"], troll["upvotes"], troll["downvotes"], troll["spam_prompts"]) == (3, 1, 3, 1)
    assert (troll["pii"], troll["hate_speech"], troll["not_appropriate"], troll["spam"]) == (2, 1, 0, 1)
    assert troll["lang_mismach"] == 0
    assert troll["quality"] == pytest.approx(0.3)
    assert troll["humor"] is None
    assert (troll["enabled"], troll["deleted"], troll["show_on_leaderboard"]) == (False, False, True)
    quiet = board[1]
    assert (quiet["political_content"], quiet["sexual_content"], quiet["red_flags"]) == (1, 1, 0)


def test_enabled_filter_and_max_count(app_client: TestClient, database: Database, keys: Keys) -> None:
    build(database, keys.trusted, _scenario)
    app_client.post("/api/v1/leaderboards/update/total")

    assert [r["username"] for r in _trollboard(app_client, enabled=False)] == ["troll"]
    assert [r["username"] for r in _trollboard(app_client, enabled=True)] == ["quiet", "liked"]
    assert [r["username"] for r in _trollboard(app_client, max_count=1)] == ["troll"]


def test_time_frames_use_the_message_date(app_client: TestClient, database: Database, keys: Keys) -> None:
    def scenario(f: StatsFactory) -> None:
        user = f.user("old-troll")
        f.message(user, emojis={"red_flag": 1}, age=timedelta(days=2))
        f.message(user, emojis={"red_flag": 1}, age=timedelta(days=40))

    build(database, keys.trusted, scenario)
    assert app_client.post("/api/v1/leaderboards/update").status_code == 204
    scores = {tf: [r["red_flags"] for r in _trollboard(app_client, tf)] for tf in ("day", "week", "total")}
    assert scores == {"day": [], "week": [1], "total": [2]}


def test_trollboard_needs_a_trusted_key(app_client: TestClient, keys: Keys) -> None:
    response = app_client.get(f"{TB}/day", headers={"X-API-Key": keys.untrusted})
    assert (response.status_code, response.json()["error_code"]) == (403, ErrorCode.API_CLIENT_NOT_AUTHORIZED)
    assert app_client.get(f"{TB}/decade").json()["error_code"] == ErrorCode.REQUEST_VALIDATION_FAILED
    assert _trollboard(app_client, "day") == []
