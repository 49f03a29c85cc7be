"""The leaderboard: time-frame tabs, 20 ranks to a page, your own row, and your place when it is elsewhere."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from oasst.backend.db import Database
from oasst.backend.models import User, UserStats, utcnow
from tests.backend.factories import client_for_key, make_db_user
from tests.conftest import Keys
from tests.web.conftest import Browser, dev_sign_in

RANK = re.compile(r'data-testid="rank">(\d+)<')


def rank_board(database: Database, keys: Keys, time_frame: str, people: int, me: str, my_rank: int) -> None:
    """``people`` ranked users in ``time_frame``; the backend user displayed as ``me`` gets ``my_rank``."""

    def scene(s: Any) -> None:
        client = client_for_key(s, keys.trusted)
        mine = s.scalars(select(User).where(User.display_name == me)).one()
        others = iter([make_db_user(s, client) for _ in range(people)])
        for rank in range(1, people + 1):
            user = mine if rank == my_rank else next(others)
            s.add(UserStats(time_frame=time_frame, user_id=user.id, leader_score=1000 - rank, rank=rank,
                            modified_date=utcnow()))  # fmt: skip
        s.flush()

    database.write(scene)


def part(html: str, testid: str) -> str:
    start = html.index(f'data-testid="{testid}"')
    return html[start : html.index("</section>", start)]


def test_pages_of_twenty_and_your_place_below_when_you_are_elsewhere(
    browser: Browser, database: Database, keys: Keys
) -> None:
    climber = browser()
    dev_sign_in(climber, "climber")
    rank_board(database, keys, "week", people=30, me="climber", my_rank=25)

    first = climber.get("/leaderboard?time_frame=week")
    assert first.status_code == 200
    assert re.search(r'data-testid="tab-week"\s+aria-current="page"', first.text)
    board = part(first.text, "leaderboard")
    assert [int(r) for r in RANK.findall(board)] == list(range(1, 21))
    assert 'data-testid="my-row"' not in board
    assert "Page 1 of 2" in board
    mine = part(first.text, "my-position")
    assert [int(r) for r in RANK.findall(mine)] == list(range(22, 29))  # three ranks either side
    assert re.search(r'data-testid="my-row">\s*<td class="num" data-testid="rank">25<', mine)
    assert 'href="/leaderboard?time_frame=week&amp;page=2"' in mine

    second = climber.get("/leaderboard?time_frame=week&page=2")
    board = part(second.text, "leaderboard")
    assert [int(r) for r in RANK.findall(board)] == list(range(21, 31))
    assert re.search(r'data-testid="my-row">\s*<td class="num" data-testid="rank">25<', board)
    assert 'data-testid="my-position"' not in second.text
    assert 'data-testid="page-next"' not in second.text and 'data-testid="page-prev"' in second.text

    beyond = climber.get("/leaderboard?time_frame=week&page=99")  # clamped to the last page
    assert [int(r) for r in RANK.findall(part(beyond.text, "leaderboard"))] == list(range(21, 31))


def test_a_time_frame_without_your_rank(browser: Browser, database: Database, keys: Keys) -> None:
    newcomer = browser()
    dev_sign_in(newcomer, "newcomer")
    rank_board(database, keys, "total", people=3, me="newcomer", my_rank=99)  # ranks others only

    total = newcomer.get("/leaderboard?time_frame=total")
    assert [int(r) for r in RANK.findall(part(total.text, "leaderboard"))] == [1, 2, 3]
    assert 'data-testid="no-rank"' in total.text
    assert 'data-testid="my-row"' not in total.text

    day = newcomer.get("/leaderboard")  # the daily board is the first tab
    assert re.search(r'data-testid="tab-day"\s+aria-current="page"', day.text)
    assert 'data-testid="board-empty"' in day.text and 'data-testid="no-rank"' in day.text

    assert newcomer.get("/leaderboard?time_frame=year").status_code == 422


def test_the_leaderboard_needs_a_sign_in(browser: Browser) -> None:
    answer = browser().get("/leaderboard")
    assert answer.url.path == "/signin"
