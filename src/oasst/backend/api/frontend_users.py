"""`/api/v1/frontend_users` routes: users as a frontend knows them, by ``(auth_method, username)``."""

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
from oasst.backend.services import messages as messages_service
from oasst.backend.services import users as users_service
from oasst.backend.services.conversations import frontend_user
from oasst.protocol import common as wire

router = APIRouter()

MaxMessages = Annotated[int, Query(gt=0, le=1000)]


@router.get("/", response_model=list[wire.FrontEndUser], deprecated=True)
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
    max_count: Annotated[int, Query(gt=0, le=10_000)] = 100,
) -> list[wire.FrontEndUser]:
    """Use ``/users/by_username`` or ``/users/cursor`` instead."""
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
            )
        ]
    )


@router.get("/{auth_method}/{username}", response_model=wire.FrontEndUser)
def query_frontend_user(
    auth_method: str,
    username: str,
    database: DatabaseDep,
    client: ApiClientDep,
    api_client_id: uuid.UUID | None = None,
) -> wire.FrontEndUser:
    """The caller's user ``(auth_method, username)`` (trusted clients may name another ``api_client_id``)."""
    return database.read(
        lambda s: frontend_user(
            users_service.get_frontend_user(
                s, client, auth_method=auth_method, username=username, api_client_id=api_client_id
            )
        )
    )


@router.post("/", response_model=wire.FrontEndUser)
def create_frontend_user(
    request: wire.CreateFrontendUserRequest,
    database: DatabaseDep,
    settings: SettingsDep,
    client: ApiClientDep,
) -> wire.FrontEndUser:
    """Create or update the caller's user. Changing enabled, notes or show_on_leaderboard needs a
    trusted client; ``tos_acceptance=true`` records the acceptance date for any client."""
    return database.write(
        lambda s: frontend_user(
            users_service.upsert_frontend_user(s, client, request, cfg=settings.tree_manager)
        )
    )


@router.get("/{auth_method}/{username}/messages", response_model=list[wire.Message])
def query_frontend_user_messages(
    auth_method: str,
    username: str,
    database: DatabaseDep,
    client: ApiClientDep,
    api_client_id: uuid.UUID | None = None,
    max_count: MaxMessages = 10,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
    only_roots: bool = False,
    desc: bool = True,
    include_deleted: bool = False,
    lang: str | None = None,
) -> list[wire.Message]:
    """The user's messages by creation date, with the user's own emojis (newest first by default)."""
    filters = messages_service.MessageFilter(
        auth_method=auth_method,
        username=username,
        api_client_id=api_client_id,
        start_date=start_date,
        end_date=end_date,
        only_roots=only_roots,
        include_deleted=include_deleted,
        lang=lang,
    )

    def read(session: Session) -> list[wire.Message]:
        owner = messages_service.find_reader(session, client=client, frontend_user=(auth_method, username))
        return messages_service.list_messages(
            session, client=client, filters=filters, desc=desc, max_count=max_count, reader=owner
        )

    return database.read(read)


@router.get("/{auth_method}/{username}/messages/cursor", response_model=wire.MessagePage)
def query_frontend_user_messages_cursor(
    auth_method: str,
    username: str,
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
        auth_method=auth_method,
        username=username,
        only_roots=only_roots,
        include_deleted=include_deleted,
        lang=lang,
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


@router.delete("/{auth_method}/{username}/messages", status_code=HTTPStatus.NO_CONTENT)
def mark_frontend_user_messages_deleted(
    auth_method: str,
    username: str,
    database: DatabaseDep,
    settings: SettingsDep,
    client: TrustedClientDep,
) -> None:
    """Soft-delete all messages of the caller's user ``(auth_method, username)`` (trusted clients only)."""

    def write(session: Session) -> None:
        user = users_service.get_frontend_user(session, client, auth_method=auth_method, username=username)
        users_service.delete_user_messages(session, user.id, cfg=settings.tree_manager)

    database.write(write)
