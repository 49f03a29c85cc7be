"""`/api/v1/stats` routes: system counts, tree-manager counts, and the dashboard's cached stats."""

from __future__ import annotations

from http import HTTPStatus

from fastapi import APIRouter

from oasst.backend.api.deps import ApiClientDep, DatabaseDep, TrustedClientDep
from oasst.backend.services import system_stats as system_stats_service
from oasst.protocol.stats import (
    AllCachedStatsResponse,
    CachedStatsName,
    CachedStatsResponse,
    SystemStats,
    TreeManagerStats,
    TreeMessageCountStats,
)

router = APIRouter()


@router.get("/", response_model=SystemStats)
def get_system_stats(database: DatabaseDep, _: TrustedClientDep) -> SystemStats:
    return database.read(system_stats_service.get_system_stats)


@router.get("/tree_manager/state_counts", response_model=dict[str, int])
def get_tree_state_counts(database: DatabaseDep, _: TrustedClientDep) -> dict[str, int]:
    return database.read(system_stats_service.tree_state_counts)


@router.get("/tree_manager/message_counts", response_model=list[TreeMessageCountStats])
def get_tree_message_counts(
    database: DatabaseDep, _: TrustedClientDep, only_active: bool = True
) -> list[TreeMessageCountStats]:
    return database.read(lambda s: system_stats_service.tree_message_counts(s, only_active=only_active))


@router.get("/tree_manager", response_model=TreeManagerStats)
def get_tree_manager_stats(database: DatabaseDep, _: TrustedClientDep) -> TreeManagerStats:
    return database.read(system_stats_service.tree_manager_stats)


@router.get("/cached", response_model=AllCachedStatsResponse)
def get_all_cached_stats(database: DatabaseDep, _: ApiClientDep) -> AllCachedStatsResponse:
    return database.read(system_stats_service.get_all_cached_stats)


@router.get("/cached/{name}", response_model=CachedStatsResponse)
def get_cached_stats(name: CachedStatsName, database: DatabaseDep, _: ApiClientDep) -> CachedStatsResponse:
    return database.read(lambda s: system_stats_service.get_cached_stats(s, name))


@router.post("/cached/update", status_code=HTTPStatus.NO_CONTENT)
def update_cached_stats(database: DatabaseDep, _: TrustedClientDep) -> None:
    database.write(system_stats_service.update_cached_stats)
