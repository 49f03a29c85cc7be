"""`/api/v1/frontend_users` routes: users as a frontend knows them, by ``(auth_method, username)``."""

from __future__ import annotations

import uuid
from http import HTTPStatus

from fastapi import APIRouter
from sqlalchemy.orm import Session

from oasst.backend.api.deps import (
    ApiClientDep,
    DatabaseDep,
    SettingsDep,
    TrustedClientDep,
)
from oasst.backend.api.params import MessageCursorQueryDep, MessageListQueryDep, UserListQueryDep
from oasst.backend.services import users as users_service
from oasst.backend.services.conversations import frontend_user
from oasst.protocol import common as wire

router = APIRouter()


@router.get("/", response_model=list[wire.FrontEndUser], deprecated=True)
def get_users_ordered_by_username(
    query: UserListQueryDep, gte_username: str | None = None, lte_username: str | None = None
) -> list[wire.FrontEndUser]:
    """Use ``/users/by_username`` or ``/users/cursor`` instead."""
    return query.read(sort_key="username", gte=gte_username, lte=lte_username)


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
    auth_method: str, username: str, query: MessageListQueryDep, include_deleted: bool = False
) -> list[wire.Message]:
    """The user's messages by creation date, with the user's own emojis (newest first by default)."""
    owner = (auth_method, username)
    return query.read(owner, auth_method=auth_method, username=username, include_deleted=include_deleted)


@router.get("/{auth_method}/{username}/messages/cursor", response_model=wire.MessagePage)
def query_frontend_user_messages_cursor(
    auth_method: str, username: str, query: MessageCursorQueryDep
) -> wire.MessagePage:
    """A keyset page of the user's messages; cursors are ``"<message_id>$<iso date>"``."""
    return query.read(auth_method=auth_method, username=username)


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
