"""`/api/v1/users` routes: users by their global id, keyset lists, moderation, their messages and stats."""

from __future__ import annotations

import uuid
from http import HTTPStatus
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from oasst.backend.api.deps import (
    ApiClientDep,
    DatabaseDep,
    FrontendUserDep,
    SettingsDep,
    TrustedClientDep,
)
from oasst.backend.api.params import MaxUsers, MessageCursorQueryDep, MessageListQueryDep, UserListQueryDep
from oasst.backend.services import leaderboards as leaderboards_service
from oasst.backend.services import users as users_service
from oasst.backend.services.conversations import frontend_user
from oasst.protocol import common as wire
from oasst.protocol.stats import LeaderboardStats, TimeFrame, UserScore

router = APIRouter()


@router.get("/by_username", response_model=list[wire.FrontEndUser])
def get_users_ordered_by_username(
    query: UserListQueryDep,
    gte_username: str | None = None,
    lte_username: str | None = None,
    desc: bool = False,
) -> list[wire.FrontEndUser]:
    """Users by username then id; ``gte``/``lte`` bounds are inclusive, ``gt_id``/``lt_id`` break ties."""
    return query.read(sort_key="username", gte=gte_username, lte=lte_username, desc=desc)


@router.get("/by_display_name", response_model=list[wire.FrontEndUser])
def get_users_ordered_by_display_name(
    query: UserListQueryDep,
    gte_display_name: str | None = None,
    lte_display_name: str | None = None,
    desc: bool = False,
) -> list[wire.FrontEndUser]:
    """Users by display name then id (same bounds as ``/by_username``)."""
    return query.read(sort_key="display_name", gte=gte_display_name, lte=lte_display_name, desc=desc)


@router.get("/cursor", response_model=wire.FrontEndUserPage)
def get_users_cursor(
    database: DatabaseDep,
    client: ApiClientDep,
    before: str | None = None,
    after: str | None = None,
    sort_key: Annotated[str, Query(max_length=32)] = "username",
    max_count: MaxUsers = 100,
    api_client_id: uuid.UUID | None = None,
    search_text: str | None = None,
    auth_method: str | None = None,
) -> wire.FrontEndUserPage:
    """A keyset page of users (``sort_key`` username or display_name); pass ``next`` as ``after``."""
    return database.read(
        lambda s: users_service.users_page(
            s,
            client,
            sort_key=sort_key,
            before=before,
            after=after,
            max_count=max_count,
            api_client_id=api_client_id,
            auth_method=auth_method,
            search_text=search_text,
        )
    )


@router.get("/{user_id}", response_model=wire.FrontEndUser)
def get_user(
    user_id: uuid.UUID, database: DatabaseDep, client: ApiClientDep, api_client_id: uuid.UUID | None = None
) -> wire.FrontEndUser:
    """A user by global id; untrusted clients only find their own users."""
    return database.read(
        lambda s: frontend_user(users_service.get_user(s, client, user_id, api_client_id=api_client_id))
    )


@router.put("/{user_id}", status_code=HTTPStatus.NO_CONTENT)
def update_user(
    user_id: uuid.UUID,
    database: DatabaseDep,
    settings: SettingsDep,
    _client: TrustedClientDep,
    display_name: str | None = None,
    enabled: bool | None = None,
    notes: str | None = None,
    show_on_leaderboard: bool | None = None,
    tos_acceptance: bool | None = None,
) -> None:
    """Change a user (trusted clients only). ``enabled=false`` bans: task calls fail with USER_DISABLED."""
    database.write(
        lambda s: users_service.update_user(
            s,
            user_id,
            cfg=settings.tree_manager,
            display_name=display_name,
            enabled=enabled,
            notes=notes,
            show_on_leaderboard=show_on_leaderboard,
            tos_acceptance=tos_acceptance,
        )
    )


@router.delete("/{user_id}", status_code=HTTPStatus.NO_CONTENT)
def delete_user(user_id: uuid.UUID, database: DatabaseDep, _client: TrustedClientDep) -> None:
    """Anonymise a user (trusted clients only): their work stays, their name and identity go."""
    database.write(lambda s: users_service.mark_user_deleted(s, user_id))


@router.get("/{user_id}/messages", response_model=list[wire.Message])
def query_user_messages(
    user_id: uuid.UUID, query: MessageListQueryDep, reader: FrontendUserDep, include_deleted: bool = False
) -> list[wire.Message]:
    """The user's messages by creation date (newest first by default)."""
    return query.read(reader, user_id=user_id, include_deleted=include_deleted)


@router.get("/{user_id}/messages/cursor", response_model=wire.MessagePage)
def query_user_messages_cursor(user_id: uuid.UUID, query: MessageCursorQueryDep) -> wire.MessagePage:
    """A keyset page of the user's messages; cursors are ``"<message_id>$<iso date>"``."""
    return query.read(user_id=user_id)


@router.delete("/{user_id}/messages", status_code=HTTPStatus.NO_CONTENT)
def mark_user_messages_deleted(
    user_id: uuid.UUID, database: DatabaseDep, settings: SettingsDep, _client: TrustedClientDep
) -> None:
    """Soft-delete all of the user's messages and the replies below them (trusted clients only)."""
    database.write(lambda s: users_service.delete_user_messages(s, user_id, cfg=settings.tree_manager))


@router.get("/{user_id}/stats", response_model=dict[str, UserScore])
def query_user_stats(
    user_id: uuid.UUID, database: DatabaseDep, _client: ApiClientDep
) -> dict[str, UserScore]:
    """The user's leaderboard rows in every time frame."""
    return database.read(lambda s: leaderboards_service.get_user_stats(s, user_id))


@router.get("/{user_id}/stats/{time_frame}", response_model=UserScore)
def query_user_stats_timeframe(
    user_id: uuid.UUID, time_frame: TimeFrame, database: DatabaseDep, _client: ApiClientDep
) -> UserScore:
    """The user's leaderboard row in one time frame."""
    return database.read(lambda s: leaderboards_service.get_user_stats(s, user_id)[time_frame.value])


@router.get("/{user_id}/stats/{time_frame}/window", response_model=LeaderboardStats | None)
def query_user_stats_timeframe_window(
    user_id: uuid.UUID,
    time_frame: TimeFrame,
    database: DatabaseDep,
    client: ApiClientDep,
    window_size: Annotated[int, Query(gt=0, le=100)] = 5,
) -> LeaderboardStats | None:
    """The ranks around the user (``null`` when the user has no rank in this time frame)."""

    def read(session: Session) -> LeaderboardStats | None:
        users_service.get_user(session, client, user_id)
        return leaderboards_service.get_user_stats_window(session, user_id, time_frame, window_size)

    return database.read(read)
