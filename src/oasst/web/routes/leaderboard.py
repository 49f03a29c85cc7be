"""The leaderboard: the top 100 of a day, week, month or all time, 20 to a page, with your own place."""

from __future__ import annotations

import math
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import Response

from oasst.client import BackendClient
from oasst.protocol.stats import LeaderboardStats, TimeFrame
from oasst.web.deps import AccountDep, BackendDep, backend_user, backend_user_id
from oasst.web.errors import unless_missing
from oasst.web.i18n import gettext as _
from oasst.web.templating import render

router = APIRouter()

BOARD_SIZE = 100
PAGE_SIZE = 20
WINDOW_SIZE = 7  # you, and three ranks either side


def time_frame_names() -> dict[TimeFrame, str]:
    return {
        TimeFrame.day: _("Daily"),
        TimeFrame.week: _("Weekly"),
        TimeFrame.month: _("Monthly"),
        TimeFrame.total: _("Overall"),
    }


@router.get("/leaderboard")
async def leaderboard(
    request: Request,
    account: AccountDep,
    backend: BackendDep,
    time_frame: TimeFrame = TimeFrame.day,
    page: int = 1,
) -> Response:
    user_id = await backend_user_id(request, account)
    board = await backend.leaderboard(time_frame, max_count=BOARD_SIZE, as_user=backend_user(account))
    rows = board.leaderboard
    pages = max(1, math.ceil(len(rows) / PAGE_SIZE))
    page = min(max(page, 1), pages)
    shown = rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    mine = next((row for row in rows if row.highlighted or row.user_id == user_id), None)
    on_page = mine is not None and any(row.user_id == user_id for row in shown)
    window = None if on_page else await _window(backend, user_id, time_frame)
    my_page = (rows.index(mine) // PAGE_SIZE + 1) if mine is not None else None
    return render(
        request,
        "leaderboard.html",
        frames=time_frame_names(),
        time_frame=time_frame,
        board=board,
        rows=shown,
        page=page,
        pages=pages,
        first_rank=(page - 1) * PAGE_SIZE + 1,
        user_id=user_id,
        mine=mine,
        on_page=on_page,
        my_page=my_page,
        window=window.leaderboard if window is not None else [],
    )


async def _window(backend: BackendClient, user_id: UUID, time_frame: TimeFrame) -> LeaderboardStats | None:
    """The ranks around the user, or ``None`` when they have no rank in this time frame (yet)."""
    return await unless_missing(
        backend.user_leaderboard_window(user_id, time_frame, window_size=WINDOW_SIZE), None
    )
