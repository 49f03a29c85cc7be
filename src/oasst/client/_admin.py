"""Boards and stats (``/leaderboards``, ``/trollboards``, ``/stats``) and administration (``/admin``,
``/health``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import TypeAdapter

from oasst.client._base import BackendBase, dump, query, root_header, user_header
from oasst.protocol.admin import (
    ApiClientResponse,
    CreateApiClientRequest,
    FlaggedMessagePage,
    FlaggedMessageResponse,
    MergeUsersRequest,
    PublicSettings,
    PurgeResult,
)
from oasst.protocol.common import User
from oasst.protocol.stats import (
    AllCachedStatsResponse,
    CachedStatsName,
    CachedStatsResponse,
    LeaderboardStats,
    SystemStats,
    TimeFrame,
    TreeManagerStats,
    TreeMessageCountStats,
    TrollboardStats,
)

_COUNTS_ADAPTER: TypeAdapter[dict[str, int]] = TypeAdapter(dict[str, int])
_TREE_COUNTS_ADAPTER: TypeAdapter[list[TreeMessageCountStats]] = TypeAdapter(list[TreeMessageCountStats])
_FLAGGED_ADAPTER: TypeAdapter[list[FlaggedMessageResponse]] = TypeAdapter(list[FlaggedMessageResponse])
_API_CLIENTS_ADAPTER: TypeAdapter[list[ApiClientResponse]] = TypeAdapter(list[ApiClientResponse])
_SETTINGS_ADAPTER: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])


class StatsApi(BackendBase):
    """Leaderboards, trollboards and system stats."""

    async def leaderboard(
        self,
        time_frame: TimeFrame | str = TimeFrame.day,
        *,
        max_count: int | None = None,
        as_user: User | None = None,
    ) -> LeaderboardStats:
        """``GET /leaderboards/{day|week|month|total}`` (``as_user`` is highlighted)."""
        frame = TimeFrame(time_frame).value
        params = query(max_count=max_count)
        data = await self._call("GET", f"/leaderboards/{frame}", params=params, headers=user_header(as_user))
        return self._parse(LeaderboardStats, data, "leaderboard")

    async def update_leaderboards(self, time_frame: TimeFrame | str | None = None) -> None:
        """``POST /leaderboards/update[/{time_frame}]`` (trusted): recompute the boards now (every time
        frame when none is given)."""
        path = "/leaderboards/update" + (f"/{TimeFrame(time_frame).value}" if time_frame is not None else "")
        await self._call("POST", path)

    async def trollboard(
        self,
        time_frame: TimeFrame | str = TimeFrame.day,
        *,
        max_count: int | None = None,
        enabled: bool | None = None,
    ) -> TrollboardStats:
        """``GET /trollboards/{time_frame}`` (trusted); ``enabled`` keeps only enabled or banned users."""
        params = query(max_count=max_count, enabled=enabled)
        data = await self._call("GET", f"/trollboards/{TimeFrame(time_frame).value}", params=params)
        return self._parse(TrollboardStats, data, "trollboard")

    async def system_stats(self) -> SystemStats:
        """``GET /stats/`` (trusted): message counts, overall and per language."""
        data = await self._call("GET", "/stats/")
        return self._parse(SystemStats, data, "system stats")

    async def tree_state_counts(self) -> dict[str, int]:
        """``GET /stats/tree_manager/state_counts`` (trusted): number of trees in each lifecycle state."""
        data = await self._call("GET", "/stats/tree_manager/state_counts")
        if isinstance(data, dict) and isinstance(data.get("state_counts"), dict):
            data = data["state_counts"]
        return self._parse(_COUNTS_ADAPTER, data, "state counts")

    async def tree_message_counts(self, *, only_active: bool = True) -> list[TreeMessageCountStats]:
        """``GET /stats/tree_manager/message_counts`` (trusted): size and age of each (active) tree."""
        params = query(only_active=only_active)
        data = await self._call("GET", "/stats/tree_manager/message_counts", params=params)
        return self._parse(_TREE_COUNTS_ADAPTER, data, "tree message counts")

    async def tree_manager_stats(self) -> TreeManagerStats:
        """``GET /stats/tree_manager`` (trusted): state counts and the active trees' message counts."""
        data = await self._call("GET", "/stats/tree_manager")
        return self._parse(TreeManagerStats, data, "tree manager stats")

    async def cached_stats(self) -> AllCachedStatsResponse:
        """``GET /stats/cached``: every dashboard statistic as last computed."""
        data = await self._call("GET", "/stats/cached")
        return self._parse(AllCachedStatsResponse, data, "cached stats")

    async def cached_stat(self, name: CachedStatsName | str) -> CachedStatsResponse:
        """``GET /stats/cached/{name}``: one dashboard statistic as last computed."""
        data = await self._call("GET", f"/stats/cached/{CachedStatsName(name).value}")
        return self._parse(CachedStatsResponse, data, "cached stat")

    async def update_cached_stats(self) -> None:
        """``POST /stats/cached/update`` (trusted): recompute the dashboard statistics now."""
        await self._call("POST", "/stats/cached/update")


class AdminApi(BackendBase):
    """Settings, the moderation queue, purges and merges (trusted keys); API keys (root token)."""

    # -- settings --------------------------------------------------------------------------------

    async def public_settings(self) -> PublicSettings:
        """``GET /admin/backend_settings/public``: limits and the tree manager's configuration."""
        data = await self._call("GET", "/admin/backend_settings/public")
        return self._parse(PublicSettings, data, "public settings")

    async def full_settings(self) -> dict[str, Any]:
        """``GET /admin/backend_settings/full`` (trusted): every setting, secrets masked."""
        data = await self._call("GET", "/admin/backend_settings/full")
        return self._parse(_SETTINGS_ADAPTER, data, "settings")

    # -- the moderation queue --------------------------------------------------------------------

    async def flagged_messages(
        self, *, processed: bool | None = None, max_count: int | None = None
    ) -> list[FlaggedMessageResponse]:
        """``GET /admin/flagged_messages``: red-flagged messages, oldest flag first."""
        params = query(processed=processed, max_count=max_count)
        data = await self._call("GET", "/admin/flagged_messages", params=params)
        return self._parse(_FLAGGED_ADAPTER, data, "flagged messages")

    async def flagged_messages_page(
        self,
        *,
        before: str | None = None,
        after: str | None = None,
        processed: bool | None = None,
        desc: bool = False,
        max_count: int | None = None,
    ) -> FlaggedMessagePage:
        """``GET /admin/flagged_messages/cursor``: a keyset page of the queue; pass ``next`` as ``after``."""
        params = query(before=before, after=after, processed=processed, desc=desc, max_count=max_count)
        data = await self._call("GET", "/admin/flagged_messages/cursor", params=params)
        return self._parse(FlaggedMessagePage, data, "flagged message page")

    async def process_flagged_message(self, message_id: UUID | str) -> FlaggedMessageResponse:
        """``POST /admin/flagged_messages/{id}/processed``: mark a flagged message as handled."""
        data = await self._call("POST", f"/admin/flagged_messages/{message_id}/processed")
        return self._parse(FlaggedMessageResponse, data, "flagged message")

    # -- users -----------------------------------------------------------------------------------

    async def purge_user(self, user_id: UUID | str, *, preview: bool = True, ban: bool = True) -> PurgeResult:
        """``POST /admin/purge_user/{id}``: hard-delete all the user's work and (``ban``) ban them.
        ``preview`` (the default) only reports what would go."""
        data = await self._call(
            "POST", f"/admin/purge_user/{user_id}", params=query(preview=preview, ban=ban)
        )
        return self._parse(PurgeResult, data, "purge result")

    async def purge_user_messages(
        self,
        user_id: UUID | str,
        *,
        purge_initial_prompts: bool = False,
        min_date: datetime | None = None,
        max_date: datetime | None = None,
        preview: bool = True,
    ) -> PurgeResult:
        """``POST /admin/purge_user/{id}/messages``: hard-delete the user's replies in a date range (and
        their own trees with ``purge_initial_prompts``). ``preview`` (the default) only reports."""
        params = query(
            purge_initial_prompts=purge_initial_prompts, min_date=min_date, max_date=max_date, preview=preview
        )
        data = await self._call("POST", f"/admin/purge_user/{user_id}/messages", params=params)
        return self._parse(PurgeResult, data, "purge result")

    async def merge_users(self, destination_user_id: UUID, source_user_ids: Sequence[UUID]) -> None:
        """``POST /admin/merge_users``: move the sources' work to the destination, delete the sources."""
        body = MergeUsersRequest(
            destination_user_id=destination_user_id, source_user_ids=list(source_user_ids)
        )
        await self._call("POST", "/admin/merge_users", json=dump(body))

    # -- API keys (root token) -------------------------------------------------------------------

    async def create_api_client(
        self,
        root_token: str,
        description: str,
        trusted: bool = False,
        *,
        frontend_type: str | None = None,
        admin_email: str | None = None,
    ) -> str:
        """``POST /admin/api_client`` with a root token: mint a new API key and return it."""
        body = CreateApiClientRequest(
            description=description,
            frontend_type=frontend_type or "other",
            trusted=trusted,
            admin_email=admin_email,
        )
        data = await self._call(
            "POST", "/admin/api_client", json=dump(body), headers=root_header(root_token), authenticate=False
        )
        if isinstance(data, dict) and isinstance(data.get("api_key"), str):
            data = data["api_key"]
        if not isinstance(data, str) or not data:
            raise self._unexpected(200, "API key", data)
        return data

    async def list_api_clients(self, root_token: str) -> list[ApiClientResponse]:
        """``GET /admin/api_clients`` with a root token: every API client, without keys."""
        data = await self._call(
            "GET", "/admin/api_clients", headers=root_header(root_token), authenticate=False
        )
        return self._parse(_API_CLIENTS_ADAPTER, data, "API clients")

    async def update_api_client(
        self, root_token: str, api_client_id: UUID | str, *, enabled: bool
    ) -> ApiClientResponse:
        """``PUT /admin/api_client/{id}?enabled=`` with a root token: a disabled key is refused at once."""
        data = await self._call(
            "PUT",
            f"/admin/api_client/{api_client_id}",
            params=query(enabled=enabled),
            headers=root_header(root_token),
            authenticate=False,
        )
        return self._parse(ApiClientResponse, data, "API client")

    async def health(self) -> dict[str, Any]:
        """``GET /health`` (outside ``/api/v1``): liveness and version."""
        data = await self._call("GET", "/health", absolute=True, authenticate=False)
        if not isinstance(data, dict):
            raise self._unexpected(200, "health", data)
        return data
