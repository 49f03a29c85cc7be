"""Wire models of ``/api/v1/admin``: API clients, purges, user merges and the flagged-message queue.

Names and shapes follow the original Open Assistant backend (``CreateApiClientRequest``,
``PurgeResultModel``, ``FlaggedMessageResponse``, ``MergeUsersRequest``); oasst adds the API-client
listing and the per-table counts of a purge.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from oasst.protocol.common import PageResult
from oasst.protocol.stats import SystemStats


class CreateApiClientRequest(BaseModel):
    description: str = Field(max_length=256)
    frontend_type: str = Field(max_length=256)
    trusted: bool | None = False
    admin_email: str | None = Field(None, max_length=256)


class ApiClientResponse(BaseModel):
    """An API client as the admin sees it; the key itself is never shown again after creation."""

    model_config = ConfigDict(from_attributes=True)

    id: UUID
    description: str
    frontend_type: str | None = None
    admin_email: str | None = None
    trusted: bool
    enabled: bool
    created_date: datetime | None = None


class PurgeCounts(BaseModel):
    """Rows a purge removed (or, in a preview, would remove), per kind."""

    trees: int = 0
    messages: int = 0
    labels: int = 0
    reactions: int = 0
    emojis: int = 0
    tasks: int = 0
    journal: int = 0
    revisions: int = 0
    flagged: int = 0
    stats: int = 0
    affected_trees: int = Field(0, description="Other users' trees that lost messages and were rechecked.")


class PurgeResult(BaseModel):
    """The original's ``PurgeResultModel`` plus ``counts``."""

    before: SystemStats
    after: SystemStats
    preview: bool
    duration: float
    counts: PurgeCounts


class FlaggedMessageResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    message_id: UUID
    processed: bool
    created_date: datetime | None = None


class FlaggedMessagePage(PageResult):
    items: list[FlaggedMessageResponse]


class MergeUsersRequest(BaseModel):
    destination_user_id: UUID
    source_user_ids: list[UUID] = Field(max_length=1000)


class PublicSettings(BaseModel):
    """The backend settings any API client may read: no secrets, no infrastructure."""

    project_name: str = "oasst"
    api_v1_str: str = "/api/v1"
    message_size_limit: int
    task_validity_minutes: int
    enforce_tos_acceptance: bool
    allow_self_labeling: bool
    allow_self_ranking: bool
    tree_manager: dict[str, Any]
    rate_limits: dict[str, Any]
    stats_intervals: dict[str, Any]
