"""Leaderboards: scores, ranks, levels, time frames, consensus-based counters, highlighting, streaks."""

from __future__ import annotations

import itertools
import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from oasst.backend.db import Database
from oasst.backend.errors import ErrorCode, OasstError
from oasst.backend.models import Message, User, utcnow
from oasst.backend.services import leaderboards
from oasst.protocol.stats import TimeFrame
from tests.backend.factories_stats import StatsFactory, build
from tests.conftest import Keys

LB = "/api/v1/leaderboards"


def _board(client: TestClient, time_frame: str = "total", **params: Any) -> dict[str, Any]:
    response = client.get(f"{LB}/{time_frame}", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _by_name(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["username"]: row for row in board["leaderboard"]}


def _three_contributors(f: StatsFactory) -> None:
    """alice 25 points, bob 11, carol 6, and a hidden dave who would have 40."""
    alice, bob, carol = f.user("alice"), f.user("bob"), f.user("carol")
    dave = f.user("dave", show_on_leaderboard=False)
    for i in range(10):  # prompts 10 -> 1 point; accepted 5 -> int(0.5) = 0
        f.message(alice, review_result=i < 5)
    prompt = f.message(bob, review_result=True)  # 1 prompt: int(0.1) = 0
    best = f.message(alice, parent=prompt, rank=0, review_result=True)  # 4 + 4 + 9
    second = f.message(alice, parent=prompt, rank=1)  # 4 + 3
    third = f.message(carol, parent=prompt, rank=2)  # 4 + 1
    f.messages(dave, 10, parent=prompt)  # hidden: 40 points, no rank
    f.message(bob, parent=best, review_result=True)  # prompter reply, accepted: 1 + 1
    for task_type in ("label_initial_prompt", "label_prompter_reply", "label_assistant_reply"):
        f.label_task(bob, mode="simple", task_type=task_type)  # 3
    f.label_task(bob, mode="full")
    f.label_task(bob, mode="full")  # 2 * 2
    f.label_task(bob, mode="full", done=False)  # not done: ignored
    f.ranking(bob, prompt, [best, second, third])  # ranking 1 + good 1
    f.ranking(carol, prompt, [third, best, second])  # ranking 1, not good


def test_scores_ranks_and_levels_follow_the_formula(
    app_client: TestClient, database: Database, keys: Keys
) -> None:
    build(database, keys.trusted, _three_contributors)
    assert app_client.post(f"{LB}/update/total").status_code == 204

    board = _board(app_client)
    assert board["time_frame"] == "total"
    rows = _by_name(board)
    assert [r["username"] for r in board["leaderboard"]] == ["alice", "bob", "carol"]
    assert [(r["rank"], r["leader_score"], r["level"]) for r in board["leaderboard"]] == [
        (1, 25, 5),
        (2, 11, 3),
        (3, 6, 2),
    ]
    alice, bob, carol = rows["alice"], rows["bob"], rows["carol"]
    assert (alice["prompts"], alice["accepted_prompts"]) == (10, 5)
    assert (alice["replies_assistant"], alice["accepted_replies_assistant"]) == (2, 1)
    assert (alice["reply_ranked_1"], alice["reply_ranked_2"], alice["reply_ranked_3"]) == (1, 1, 0)
    assert (bob["labels_simple"], bob["labels_full"]) == (3, 2)
    assert (bob["rankings_total"], bob["rankings_good"]) == (1, 1)
    assert (bob["replies_prompter"], bob["accepted_replies_prompter"]) == (1, 1)
    assert (carol["rankings_total"], carol["rankings_good"], carol["reply_ranked_3"]) == (1, 0, 1)
    assert not any(r["highlighted"] for r in board["leaderboard"])


def test_hidden_disabled_and_deleted_users_are_not_ranked(
    app_client: TestClient, database: Database, keys: Keys
) -> None:
    def scenario(f: StatsFactory) -> None:
        prompt = f.message(f.user("owner"))
        for name, fields in [
            ("visible", {}),
            ("hidden", {"show_on_leaderboard": False}),
            ("banned", {"enabled": False}),
            ("gone", {"deleted": True}),
            ("visible2", {}),
        ]:
            f.messages(f.user(name, **fields), 3 if name != "visible2" else 1, parent=prompt)

    build(database, keys.trusted, scenario)
    assert app_client.post(f"{LB}/update").status_code == 204

    board = _board(app_client)
    assert [(r["username"], r["rank"]) for r in board["leaderboard"]] == [
        ("visible", 1),
        ("visible2", 2),
        ("owner", 3),
    ]


def test_max_count_limits_the_board(app_client: TestClient, database: Database, keys: Keys) -> None:
    build(database, keys.trusted, _three_contributors)
    app_client.post(f"{LB}/update/total")
    assert [r["username"] for r in _board(app_client, max_count=2)["leaderboard"]] == ["alice", "bob"]
    assert app_client.get(f"{LB}/total", params={"max_count": 0}).status_code == 422


def test_caller_is_highlighted(app_client: TestClient, database: Database, keys: Keys) -> None:
    build(database, keys.trusted, _three_contributors)
    app_client.post(f"{LB}/update/total")

    response = app_client.get(f"{LB}/total", headers={"x-oasst-user": "local:bob"})
    assert response.status_code == 200
    assert {r["username"]: r["highlighted"] for r in response.json()["leaderboard"]} == {
        "alice": False,
        "bob": True,
        "carol": False,
    }
    unknown = _board(app_client, oasst_user="local:nobody")
    assert not any(r["highlighted"] for r in unknown["leaderboard"])
    bad = app_client.get(f"{LB}/total", headers={"x-oasst-user": "bob"})
    assert bad.json()["error_code"] == ErrorCode.AUTH_AND_USERNAME_REQUIRED


def test_level_thresholds() -> None:
    assert leaderboards.THRESHOLDS[:7] == [0, 4, 9, 16, 24, 32, 42]
    assert len(leaderboards.THRESHOLDS) == 100
    thresholds = leaderboards.THRESHOLDS
    assert all(a < b for a, b in itertools.pairwise(thresholds))
    assert thresholds[-1] == 6000
    assert leaderboards.level_for(None) == 0
    assert [leaderboards.level_for(s) for s in (0, 3, 4, 8, 9, 10**6)] == [1, 1, 2, 2, 3, 100]


def test_time_frames_exclude_older_activity(app_client: TestClient, database: Database, keys: Keys) -> None:
    def scenario(f: StatsFactory) -> None:
        user = f.user("steady")
        other = f.message(f.user("other"))
        replies = []
        for age_days in (0.1, 3, 20, 60):  # inside day, week, month, total respectively
            age = timedelta(days=age_days)
            f.message(user, age=age)
            f.label_task(user, mode="full", age=age)
            replies.append(f.message(f.user(f"r{age_days}"), parent=other))
        f.ranking(user, other, replies, age=timedelta(days=20))

    build(database, keys.trusted, scenario)
    assert app_client.post(f"{LB}/update").status_code == 204

    expected = {"day": (1, 1, 0), "week": (2, 2, 0), "month": (3, 3, 1), "total": (4, 4, 1)}
    for frame, (prompts, labels_full, rankings) in expected.items():
        row = _by_name(_board(app_client, frame))["steady"]
        assert (row["prompts"], row["labels_full"], row["rankings_total"]) == (prompts, labels_full, rankings)
        assert row["base_date"] is None if frame == "total" else row["base_date"] is not None


def test_week_and_month_start_at_midnight() -> None:
    now = utcnow().replace(hour=15, minute=30)
    week = leaderboards.base_date_for(TimeFrame.week, now)
    assert week is not None and (week.hour, week.minute, (now.date() - week.date()).days) == (0, 0, 7)
    month = leaderboards.base_date_for(TimeFrame.month, now)
    assert month is not None and (now.date() - month.date()).days == 30
    assert leaderboards.base_date_for(TimeFrame.day, now) == now - timedelta(hours=24)
    assert leaderboards.base_date_for(TimeFrame.total, now) is None


def test_reply_ranks_and_good_rankings_use_the_consensus(database: Database, keys: Keys) -> None:
    def scenario(f: StatsFactory) -> dict[str, User]:
        users = {name: f.user(name) for name in ("x", "y", "z", "r1", "r2", "r3", "r4", "p")}
        prompt = f.message(users["p"])
        rx = f.message(users["x"], parent=prompt, rank=0)
        ry = f.message(users["y"], parent=prompt, rank=1)
        rz = f.message(users["z"], parent=prompt, rank=2)
        f.ranking(users["r1"], prompt, [rx, ry, rz])  # picks the winner
        f.ranking(users["r2"], prompt, [ry, rx, rz])
        f.ranking(users["r3"], prompt, [rx, rz, ry], nested=True)  # the original's payload container
        f.ranking(users["r4"], prompt, [ry, rz, rx])
        unranked = f.message(users["p"])  # its replies have no consensus yet
        a, b = f.message(users["x"], parent=unranked), f.message(users["y"], parent=unranked)
        f.ranking(users["r1"], unranked, [a, b])
        return users

    users = build(database, keys.trusted, scenario)
    database.write(lambda s: leaderboards.recompute_user_stats(s, time_frame=TimeFrame.total))

    def total(name: str) -> Any:
        return database.read(lambda s: leaderboards.get_user_stats(s, users[name].id))["total"]

    # Two ballots put y's reply first, but the consensus ranked x's reply best: one first place for x.
    assert [total(n).reply_ranked_1 for n in "xyz"] == [1, 0, 0]
    assert [total(n).reply_ranked_2 for n in "xyz"] == [0, 1, 0]
    assert [total(n).reply_ranked_3 for n in "xyz"] == [0, 0, 1]
    assert [(total(n).rankings_total, total(n).rankings_good) for n in ("r1", "r2", "r3", "r4")] == [
        (2, 1),
        (1, 0),
        (1, 1),
        (1, 0),
    ]
    assert total("r1").leader_score == 3


def test_deleted_messages_do_not_count_and_recompute_replaces_rows(
    app_client: TestClient, database: Database, keys: Keys
) -> None:
    def scenario(f: StatsFactory) -> list[Message]:
        return f.messages(f.user("writer"), 20)

    prompts = build(database, keys.trusted, scenario)
    app_client.post(f"{LB}/update/total")
    assert _by_name(_board(app_client))["writer"]["prompts"] == 20

    def delete_half(session: Any) -> None:
        for m in prompts[:10]:
            session.get(Message, m.id).deleted = True

    database.write(delete_half)
    app_client.post(f"{LB}/update/total")
    assert _by_name(_board(app_client))["writer"]["prompts"] == 10


def test_user_stats_cover_every_time_frame(database: Database, keys: Keys) -> None:
    def scenario(f: StatsFactory) -> tuple[User, User]:
        veteran, newcomer = f.user("veteran"), f.user("newcomer")
        f.messages(veteran, 3, parent=f.message(newcomer, age=timedelta(days=90)), age=timedelta(days=60))
        return veteran, newcomer

    veteran, newcomer = build(database, keys.trusted, scenario)
    database.write(leaderboards.recompute_all_user_stats)

    stats = database.read(lambda s: leaderboards.get_user_stats(s, veteran.id))
    assert set(stats) == {"day", "week", "month", "total"}
    assert (stats["day"].level, stats["day"].rank, stats["day"].leader_score) == (0, None, 0)
    assert (stats["total"].rank, stats["total"].leader_score, stats["total"].level) == (1, 12, 3)
    assert stats["total"].highlighted
    newcomer_total = database.read(lambda s: leaderboards.get_user_stats(s, newcomer.id))["total"]
    assert (newcomer_total.rank, newcomer_total.leader_score, newcomer_total.level) == (2, 0, 1)
    with pytest.raises(OasstError) as error:
        database.read(lambda s: leaderboards.get_user_stats(s, uuid.UUID(int=1)))
    assert error.value.error_code == ErrorCode.USER_NOT_FOUND


def test_window_around_a_user(database: Database, keys: Keys) -> None:
    def scenario(f: StatsFactory) -> list[User]:
        prompt = f.message(f.user("owner", show_on_leaderboard=False))
        users = [f.user(f"u{i}") for i in range(1, 8)]
        for i, user in enumerate(users):
            f.messages(user, 7 - i, parent=prompt)  # u1 best ... u7 last
        return users

    users = build(database, keys.trusted, scenario)
    database.write(lambda s: leaderboards.recompute_user_stats(s, time_frame=TimeFrame.week))

    def window(user: User, size: int) -> Any:
        return database.read(lambda s: leaderboards.get_user_stats_window(s, user.id, TimeFrame.week, size))

    middle = window(users[3], 3)
    assert [(r.username, r.rank, r.highlighted) for r in middle.leaderboard] == [
        ("u3", 3, False),
        ("u4", 4, True),
        ("u5", 5, False),
    ]
    assert [r.rank for r in window(users[0], 5).leaderboard] == [1, 2, 3, 4, 5]
    assert [r.rank for r in window(users[6], 4).leaderboard] == [5, 6, 7]
    assert (
        database.read(lambda s: leaderboards.get_user_stats_window(s, users[0].id, TimeFrame.day, 5)) is None
    )


def test_streaks_end_after_36_hours_without_activity(database: Database, keys: Keys) -> None:
    now = utcnow()

    def scenario(f: StatsFactory) -> tuple[User, User]:
        idle = f.user(
            "idle",
            streak_days=5,
            streak_last_day_date=now - timedelta(days=6),
            last_activity_date=now - timedelta(hours=37),
        )
        busy = f.user(
            "busy",
            streak_days=3,
            streak_last_day_date=now - timedelta(days=3),
            last_activity_date=now - timedelta(hours=2),
        )
        return idle, busy

    idle, busy = build(database, keys.trusted, scenario)
    assert database.write(leaderboards.reset_streaks) == 1

    def streak(user: User) -> tuple[Any, Any]:
        row = database.read(lambda s: s.get(User, user.id))
        assert row is not None
        return row.streak_days, row.streak_last_day_date

    assert streak(idle) == (None, None)
    assert streak(busy)[0] == 3


def test_invalid_time_frame_is_a_validation_error(app_client: TestClient) -> None:
    for response in (app_client.get(f"{LB}/year"), app_client.post(f"{LB}/update/year")):
        assert response.status_code == 422
        assert response.json()["error_code"] == ErrorCode.REQUEST_VALIDATION_FAILED


def test_updates_need_a_trusted_key_but_reading_does_not(app_client: TestClient, keys: Keys) -> None:
    untrusted = {"X-API-Key": keys.untrusted}
    for path in (f"{LB}/update", f"{LB}/update/day"):
        response = app_client.post(path, headers=untrusted)
        assert (response.status_code, response.json()["error_code"]) == (
            403,
            ErrorCode.API_CLIENT_NOT_AUTHORIZED,
        )
    response = app_client.get(f"{LB}/day", headers=untrusted)
    assert response.status_code == 200
    assert response.json()["leaderboard"] == []
    assert app_client.get(f"{LB}/day", headers={"X-API-Key": "wrong"}).status_code == 403
