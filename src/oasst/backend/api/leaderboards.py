"""`/api/v1/leaderboards` routes: the boards per time frame, and forced recomputes."""

from __future__ import annotations

import uuid
from functools import partial
from http import HTTPStatus
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from oasst.backend.api.deps import ApiClientDep, DatabaseDep, FrontendUserDep, TrustedClientDep
from oasst.backend.models import ApiClient
from oasst.backend.services import clients as clients_service
from oasst.backend.services import leaderboards as leaderboards_service
from oasst.backend.services import troll_stats as troll_stats_service
from oasst.protocol.stats import LeaderboardStats, TimeFrame

router = APIRouter()

MaxCount = Annotated[int, Query(gt=0, le=10_000, description="How many ranks to return.")]


def _caller_id(
    session: Session, client: ApiClient, frontend_user: tuple[str, str] | None
) -> uuid.UUID | None:
    if frontend_user is None:
        return None
    auth_method, username = frontend_user
    user = clients_service.find_user(session, client, username=username, auth_method=auth_method)
    return user.id if user is not None else None


@router.get("/{time_frame}", response_model=LeaderboardStats)
def get_leaderboard(
    time_frame: TimeFrame,
    database: DatabaseDep,
    client: ApiClientDep,
    frontend_user: FrontendUserDep,
    max_count: MaxCount = 100,
) -> LeaderboardStats:
    """The top ranks; the caller named by ``x-oasst-user`` is marked ``highlighted``."""

    def read(session: Session) -> LeaderboardStats:
        return leaderboards_service.get_leaderboard(
            session,
            time_frame=time_frame,
            max_count=max_count,
            highlighted_user_id=_caller_id(session, client, frontend_user),
        )

    return database.read(read)


def _recompute(session: Session, time_frame: TimeFrame) -> None:
    leaderboards_service.recompute_user_stats(session, time_frame=time_frame)
    troll_stats_service.recompute_troll_stats(session, time_frame=time_frame)


@router.post("/update/{time_frame}", status_code=HTTPStatus.NO_CONTENT)
def update_leaderboard(time_frame: TimeFrame, database: DatabaseDep, _: TrustedClientDep) -> None:
    """Recompute one time frame's leaderboard and trollboard now."""
    database.write(lambda s: _recompute(s, time_frame))


@router.post("/update", status_code=HTTPStatus.NO_CONTENT)
def update_all_leaderboards(database: DatabaseDep, _: TrustedClientDep) -> None:
    """Recompute every time frame (each in its own transaction)."""
    for time_frame in TimeFrame:
        database.write(partial(_recompute, time_frame=time_frame))
