"""`/api/v1/users` routes: users by their global id, keyset lists, moderation, their messages and stats."""

from __future__ import annotations

import uuid
from datetime import datetime
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
from oasst.backend.services import leaderboards as leaderboards_service
from oasst.backend.services import messages as messages_service
from oasst.backend.services import users as users_service
from oasst.backend.services.conversations import frontend_user
from oasst.protocol import common as wire
from oasst.protocol.stats import LeaderboardStats, TimeFrame, UserScore

router = APIRouter()

MaxUsers = Annotated[int, Query(gt=0, le=10_000)]
MaxMessages = Annotated[int, Query(gt=0, le=1000)]


@router.get("/by_username", response_model=list[wire.FrontEndUser])
def get_users_ordered_by_username(
    database: DatabaseDep,
    client: ApiClientDep,
    api_client_id: uuid.UUID | None = None,
    gte_username: str | None = None,
    gt_id: uuid.UUID | None = None,
    lte_username: str | None = None,
    lt_id: uuid.UUID | None = None,
    search_text: str | None = None,
    auth_method: str | None = None,
    max_count: MaxUsers = 100,
    desc: bool = False,
) -> list[wire.FrontEndUser]:
    """Users by username then id; ``gte``/``lte`` bounds are inclusive, ``gt_id``/``lt_id`` break ties."""
    return database.read(
        lambda s: [
            frontend_user(u)
            for u in users_service.list_users(
                s,
                client,
                sort_key="username",
                gte=gte_username,
                gt_id=gt_id,
                lte=lte_username,
                lt_id=lt_id,
                api_client_id=api_client_id,
                auth_method=auth_method,
                search_text=search_text,
                limit=max_count,
                desc=desc,
            )
        ]
    )


@router.get("/by_display_name", response_model=list[wire.FrontEndUser])
def get_users_ordered_by_display_name(
    database: DatabaseDep,
    client: ApiClientDep,
    api_client_id: uuid.UUID | None = None,
    gte_display_name: str | None = None,
    gt_id: uuid.UUID | None = None,
    lte_display_name: str | None = None,
    lt_id: uuid.UUID | None = None,
    auth_method: str | None = None,
    search_text: str | None = None,
    max_count: MaxUsers = 100,
    desc: bool = False,
) -> list[wire.FrontEndUser]:
    """Users by display name then id (same bounds as ``/by_username``)."""
    return database.read(
        lambda s: [
            frontend_user(u)
            for u in users_service.list_users(
                s,
                client,
                sort_key="display_name",
                gte=gte_display_name,
                gt_id=gt_id,
                lte=lte_display_name,
                lt_id=lt_id,
                api_client_id=api_client_id,
                auth_method=auth_method,
                search_text=search_text,
                limit=max_count,
                desc=desc,
            )
        ]
    )


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
    user_id: uuid.UUID,
    database: DatabaseDep,
    client: ApiClientDep,
    reader: FrontendUserDep,
    api_client_id: uuid.UUID | None = None,
    max_count: MaxMessages = 10,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
    only_roots: bool = False,
    desc: bool = True,
    include_deleted: bool = False,
    lang: str | None = None,
) -> list[wire.Message]:
    """The user's messages by creation date (newest first by default)."""
    filters = messages_service.MessageFilter(
        user_id=user_id,
        api_client_id=api_client_id,
        start_date=start_date,
        end_date=end_date,
        only_roots=only_roots,
        include_deleted=include_deleted,
        lang=lang,
    )

    def read(session: Session) -> list[wire.Message]:
        return messages_service.list_messages(
            session,
            client=client,
            filters=filters,
            desc=desc,
            max_count=max_count,
            reader=messages_service.find_reader(session, client=client, frontend_user=reader),
        )

    return database.read(read)


@router.get("/{user_id}/messages/cursor", response_model=wire.MessagePage)
def query_user_messages_cursor(
    user_id: uuid.UUID,
    database: DatabaseDep,
    client: ApiClientDep,
    reader: FrontendUserDep,
    before: str | None = None,
    after: str | None = None,
    only_roots: bool = False,
    include_deleted: bool = False,
    max_count: MaxMessages = 10,
    desc: bool = False,
    lang: str | None = None,
) -> wire.MessagePage:
    """A keyset page of the user's messages; cursors are ``"<message_id>$<iso date>"``."""
    filters = messages_service.MessageFilter(
        user_id=user_id, only_roots=only_roots, include_deleted=include_deleted, lang=lang
    )

    def read(session: Session) -> wire.MessagePage:
        return messages_service.cursor_page(
            session,
            client=client,
            filters=filters,
            before=before,
            after=after,
            desc=desc,
            max_count=max_count,
            reader=messages_service.find_reader(session, client=client, frontend_user=reader),
        )

    return database.read(read)


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
