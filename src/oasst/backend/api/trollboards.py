"""`/api/v1/trollboards` routes (trusted clients: moderation)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from oasst.backend.api.deps import DatabaseDep, TrustedClientDep
from oasst.backend.services import troll_stats as troll_stats_service
from oasst.protocol.stats import TimeFrame, TrollboardStats

router = APIRouter()


@router.get("/{time_frame}", response_model=TrollboardStats)
def get_trollboard(
    time_frame: TimeFrame,
    database: DatabaseDep,
    _: TrustedClientDep,
    max_count: Annotated[int, Query(gt=0, le=10_000)] = 100,
    enabled: Annotated[
        bool | None, Query(description="Only enabled (true) or disabled (false) users.")
    ] = None,
) -> TrollboardStats:
    return database.read(
        lambda s: troll_stats_service.get_trollboard(
            s, time_frame=time_frame, max_count=max_count, enabled=enabled
        )
    )
