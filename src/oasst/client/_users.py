"""End users: by global id (``/users``) and as a frontend knows them (``/frontend_users``), with their
messages and leaderboard stats."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import TypeAdapter

from oasst.client._base import BackendBase, dump, query, segment, user_header
from oasst.client._messages import MESSAGES_ADAPTER
from oasst.protocol.common import (
    CreateFrontendUserRequest,
    FrontEndUser,
    FrontEndUserPage,
    Message,
    MessagePage,
    User,
)
from oasst.protocol.stats import LeaderboardStats, TimeFrame, UserScore

_USERS_ADAPTER: TypeAdapter[list[FrontEndUser]] = TypeAdapter(list[FrontEndUser])
_SCORES_ADAPTER: TypeAdapter[dict[str, UserScore]] = TypeAdapter(dict[str, UserScore])
_WINDOW_ADAPTER: TypeAdapter[LeaderboardStats | None] = TypeAdapter(LeaderboardStats | None)

UserSortKey = Literal["username", "display_name"]


class UsersApi(BackendBase):
    """Create, find, list and moderate users; their messages and stats."""

    # -- as a frontend knows them ----------------------------------------------------------------

    async def upsert_frontend_user(self, request: CreateFrontendUserRequest) -> FrontEndUser:
        """``POST /frontend_users/``: create or update an end user (changing fields needs a trusted key)."""
        data = await self._call("POST", "/frontend_users/", json=dump(request))
        return self._parse(FrontEndUser, data, "frontend user")

    async def get_frontend_user(
        self, auth_method: str, username: str, *, api_client_id: UUID | str | None = None
    ) -> FrontEndUser:
        """``GET /frontend_users/{auth_method}/{username}`` (a trusted key may name another client's user)."""
        path = f"/frontend_users/{segment(auth_method)}/{segment(username)}"
        data = await self._call("GET", path, params=query(api_client_id=api_client_id))
        return self._parse(FrontEndUser, data, "frontend user")

    async def list_frontend_users(
        self,
        *,
        gte_username: str | None = None,
        lte_username: str | None = None,
        search_text: str | None = None,
        max_count: int | None = None,
    ) -> list[FrontEndUser]:
        """``GET /frontend_users/`` (the original's listing; :meth:`users_page` is the better one)."""
        params = query(
            gte_username=gte_username, lte_username=lte_username, search_text=search_text, max_count=max_count
        )
        data = await self._call("GET", "/frontend_users/", params=params)
        return self._parse(_USERS_ADAPTER, data, "users")

    async def frontend_user_messages(
        self,
        auth_method: str,
        username: str,
        *,
        lang: str | None = None,
        only_roots: bool = False,
        include_deleted: bool = False,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
        desc: bool = True,
        max_count: int | None = None,
    ) -> list[Message]:
        """``GET /frontend_users/{auth_method}/{username}/messages``, with that user's own emojis."""
        path = f"/frontend_users/{segment(auth_method)}/{segment(username)}/messages"
        params = query(
            lang=lang,
            only_roots=only_roots,
            include_deleted=include_deleted,
            start_date=start_date,
            end_date=end_date,
            desc=desc,
            max_count=max_count,
        )
        data = await self._call("GET", path, params=params)
        return self._parse(MESSAGES_ADAPTER, data, "messages")

    async def frontend_user_messages_page(
        self,
        auth_method: str,
        username: str,
        *,
        before: str | None = None,
        after: str | None = None,
        lang: str | None = None,
        only_roots: bool = False,
        include_deleted: bool = False,
        desc: bool = False,
        max_count: int | None = None,
        as_user: User | None = None,
    ) -> MessagePage:
        """``GET /frontend_users/{auth_method}/{username}/messages/cursor``: a keyset page."""
        path = f"/frontend_users/{segment(auth_method)}/{segment(username)}/messages/cursor"
        params = query(
            before=before,
            after=after,
            lang=lang,
            only_roots=only_roots,
            include_deleted=include_deleted,
            desc=desc,
            max_count=max_count,
        )
        data = await self._call("GET", path, params=params, headers=user_header(as_user))
        return self._parse(MessagePage, data, "message page")

    async def delete_frontend_user_messages(self, auth_method: str, username: str) -> None:
        """``DELETE /frontend_users/{auth_method}/{username}/messages`` (trusted): soft-delete them all."""
        await self._call("DELETE", f"/frontend_users/{segment(auth_method)}/{segment(username)}/messages")

    # -- by global id ----------------------------------------------------------------------------

    async def get_user(self, user_id: UUID | str, *, api_client_id: UUID | str | None = None) -> FrontEndUser:
        """``GET /users/{id}`` (untrusted keys find only their own users)."""
        data = await self._call("GET", f"/users/{user_id}", params=query(api_client_id=api_client_id))
        return self._parse(FrontEndUser, data, "user")

    async def update_user(
        self,
        user_id: UUID | str,
        *,
        display_name: str | None = None,
        enabled: bool | None = None,
        notes: str | None = None,
        show_on_leaderboard: bool | None = None,
        tos_acceptance: bool | None = None,
    ) -> None:
        """``PUT /users/{id}`` (trusted): change the fields given. ``enabled=False`` bans the user (their
        task calls then fail with ``USER_DISABLED``)."""
        params = query(
            display_name=display_name,
            enabled=enabled,
            notes=notes,
            show_on_leaderboard=show_on_leaderboard,
            tos_acceptance=tos_acceptance,
        )
        await self._call("PUT", f"/users/{user_id}", params=params)

    async def delete_user(self, user_id: UUID | str) -> None:
        """``DELETE /users/{id}`` (trusted): anonymise the user; their work stays."""
        await self._call("DELETE", f"/users/{user_id}")

    async def list_users(
        self,
        sort_key: UserSortKey = "username",
        *,
        gte: str | None = None,
        lte: str | None = None,
        gt_id: UUID | str | None = None,
        lt_id: UUID | str | None = None,
        desc: bool = False,
        search_text: str | None = None,
        auth_method: str | None = None,
        api_client_id: UUID | str | None = None,
        max_count: int | None = None,
    ) -> list[FrontEndUser]:
        """``GET /users/by_username`` or ``/users/by_display_name``: ``gte``/``lte`` bound the sort key
        inclusively, ``gt_id``/``lt_id`` break ties."""
        params = query(
            gt_id=gt_id,
            lt_id=lt_id,
            desc=desc,
            search_text=search_text,
            auth_method=auth_method,
            api_client_id=api_client_id,
            max_count=max_count,
            **{f"gte_{sort_key}": gte, f"lte_{sort_key}": lte},
        )
        data = await self._call("GET", f"/users/by_{sort_key}", params=params)
        return self._parse(_USERS_ADAPTER, data, "users")

    async def users_page(
        self,
        *,
        before: str | None = None,
        after: str | None = None,
        sort_key: UserSortKey = "username",
        search_text: str | None = None,
        auth_method: str | None = None,
        api_client_id: UUID | str | None = None,
        max_count: int | None = None,
    ) -> FrontEndUserPage:
        """``GET /users/cursor``: a keyset page of users; pass a page's ``next`` as ``after``."""
        params = query(
            before=before,
            after=after,
            sort_key=sort_key,
            search_text=search_text,
            auth_method=auth_method,
            api_client_id=api_client_id,
            max_count=max_count,
        )
        data = await self._call("GET", "/users/cursor", params=params)
        return self._parse(FrontEndUserPage, data, "user page")

    async def user_messages(
        self,
        user_id: UUID | str,
        *,
        lang: str | None = None,
        only_roots: bool = False,
        include_deleted: bool = False,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
        desc: bool = True,
        max_count: int | None = None,
        as_user: User | None = None,
    ) -> list[Message]:
        """``GET /users/{id}/messages``: the user's messages by creation date (newest first by default)."""
        params = query(
            lang=lang,
            only_roots=only_roots,
            include_deleted=include_deleted,
            start_date=start_date,
            end_date=end_date,
            desc=desc,
            max_count=max_count,
        )
        data = await self._call(
            "GET", f"/users/{user_id}/messages", params=params, headers=user_header(as_user)
        )
        return self._parse(MESSAGES_ADAPTER, data, "messages")

    async def user_messages_page(
        self,
        user_id: UUID | str,
        *,
        before: str | None = None,
        after: str | None = None,
        lang: str | None = None,
        only_roots: bool = False,
        include_deleted: bool = False,
        desc: bool = False,
        max_count: int | None = None,
        as_user: User | None = None,
    ) -> MessagePage:
        """``GET /users/{id}/messages/cursor``: a keyset page of the user's messages."""
        params = query(
            before=before,
            after=after,
            lang=lang,
            only_roots=only_roots,
            include_deleted=include_deleted,
            desc=desc,
            max_count=max_count,
        )
        path = f"/users/{user_id}/messages/cursor"
        data = await self._call("GET", path, params=params, headers=user_header(as_user))
        return self._parse(MessagePage, data, "message page")

    async def delete_user_messages(self, user_id: UUID | str) -> None:
        """``DELETE /users/{id}/messages`` (trusted): soft-delete all the user's messages and replies below."""
        await self._call("DELETE", f"/users/{user_id}/messages")

    # -- stats -----------------------------------------------------------------------------------

    async def user_stats(self, user_id: UUID | str) -> dict[str, UserScore]:
        """``GET /users/{id}/stats``: the user's leaderboard row in every time frame (keyed by frame)."""
        data = await self._call("GET", f"/users/{user_id}/stats")
        return self._parse(_SCORES_ADAPTER, data, "user stats")

    async def user_score(self, user_id: UUID | str, time_frame: TimeFrame | str) -> UserScore:
        """``GET /users/{id}/stats/{time_frame}``: the user's leaderboard row in one time frame."""
        data = await self._call("GET", f"/users/{user_id}/stats/{TimeFrame(time_frame).value}")
        return self._parse(UserScore, data, "user score")

    async def user_leaderboard_window(
        self, user_id: UUID | str, time_frame: TimeFrame | str, *, window_size: int | None = None
    ) -> LeaderboardStats | None:
        """``GET /users/{id}/stats/{time_frame}/window``: the ranks around the user (``None`` when the user
        has no rank in that time frame)."""
        path = f"/users/{user_id}/stats/{TimeFrame(time_frame).value}/window"
        data = await self._call("GET", path, params=query(window_size=window_size))
        return self._parse(_WINDOW_ADAPTER, data, "leaderboard window")
