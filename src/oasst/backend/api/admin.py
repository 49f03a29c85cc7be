"""`/api/v1/admin` routes: API keys (root token), settings, purges, user merges, the flagged queue."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from oasst.backend.api.deps import ApiClientDep, DatabaseDep, RootTokenDep, SettingsDep, TrustedClientDep
from oasst.backend.services import admin as admin_service
from oasst.backend.services import clients as clients_service
from oasst.backend.services import users as users_service
from oasst.protocol.admin import (
    ApiClientResponse,
    CreateApiClientRequest,
    FlaggedMessagePage,
    FlaggedMessageResponse,
    MergeUsersRequest,
    PublicSettings,
    PurgeResult,
)

log = logging.getLogger("oasst.backend.admin")

router = APIRouter()


def _forget_cached_keys(request: Request) -> None:
    """Key lookups are cached for a few seconds; a changed client must take effect now."""
    request.app.state.api_client_cache.clear()


@router.post("/api_client", response_model=str)
def create_api_client(body: CreateApiClientRequest, database: DatabaseDep, _root: RootTokenDep) -> str:
    """Mint an API key (root token only). The key is returned once; only its hash is stored."""
    client, key = database.write(
        lambda s: clients_service.create_api_client(
            s,
            description=body.description,
            frontend_type=body.frontend_type,
            trusted=bool(body.trusted),
            admin_email=body.admin_email,
        )
    )
    log.info("created API client %s (%r, trusted=%s)", client.id, body.description, bool(body.trusted))
    return key


@router.get("/api_clients", response_model=list[ApiClientResponse])
def list_api_clients(database: DatabaseDep, _root: RootTokenDep) -> list[ApiClientResponse]:
    """Every API client, without keys (root token only)."""
    return database.read(admin_service.list_api_clients)


@router.put("/api_client/{api_client_id}", response_model=ApiClientResponse)
def update_api_client(
    api_client_id: uuid.UUID, enabled: bool, request: Request, database: DatabaseDep, _root: RootTokenDep
) -> ApiClientResponse:
    """Enable or disable an API key (root token only); a disabled key is refused at once."""
    result = database.write(lambda s: admin_service.set_api_client_enabled(s, api_client_id, enabled=enabled))
    _forget_cached_keys(request)
    log.warning("API client %s enabled=%s", api_client_id, enabled)
    return result


@router.get("/backend_settings/public", response_model=PublicSettings)
def get_backend_settings_public(settings: SettingsDep, _client: ApiClientDep) -> PublicSettings:
    """Limits and the tree manager's configuration (any API key)."""
    return admin_service.public_settings(settings)


@router.get("/backend_settings/full", response_model=dict[str, Any])
def get_backend_settings_full(settings: SettingsDep, client: TrustedClientDep) -> dict[str, Any]:
    """Every setting, secrets masked (trusted keys only)."""
    log.info("full settings read by API client %s", client.id)
    return admin_service.full_settings(settings)


@router.post("/purge_user/{user_id}", response_model=PurgeResult)
def purge_user(
    user_id: uuid.UUID,
    database: DatabaseDep,
    settings: SettingsDep,
    client: TrustedClientDep,
    preview: bool = True,
    ban: bool = True,
) -> PurgeResult:
    """Hard-delete all of a user's work and (with ``ban``) ban them. ``preview`` (the default) only
    reports what would be removed."""
    result = database.write(
        lambda s: admin_service.purge_user(s, user_id, cfg=settings.tree_manager, ban=ban, preview=preview)
    )
    log.log(
        logging.INFO if preview else logging.WARNING,
        "purge user %s (preview=%s, ban=%s) by API client %s: %s",
        user_id,
        preview,
        ban,
        client.id,
        result.counts,
    )
    return result


@router.post("/purge_user/{user_id}/messages", response_model=PurgeResult)
def purge_user_messages(
    user_id: uuid.UUID,
    database: DatabaseDep,
    settings: SettingsDep,
    client: TrustedClientDep,
    purge_initial_prompts: bool = False,
    min_date: datetime | None = None,
    max_date: datetime | None = None,
    preview: bool = True,
) -> PurgeResult:
    """Hard-delete a user's replies in a date range, with the replies below them (and their own trees
    with ``purge_initial_prompts``). ``preview`` (the default) only reports what would be removed."""
    result = database.write(
        lambda s: admin_service.purge_user_messages(
            s,
            user_id,
            cfg=settings.tree_manager,
            purge_initial_prompts=purge_initial_prompts,
            min_date=min_date,
            max_date=max_date,
            preview=preview,
        )
    )
    log.log(
        logging.INFO if preview else logging.WARNING,
        "purge messages of user %s (preview=%s) by API client %s: %s",
        user_id,
        preview,
        client.id,
        result.counts,
    )
    return result


@router.get("/flagged_messages", response_model=list[FlaggedMessageResponse])
def get_flagged_messages(
    database: DatabaseDep,
    _client: TrustedClientDep,
    max_count: Annotated[int | None, Query(gt=0, le=10_000)] = 100,
    processed: bool | None = None,
) -> list[FlaggedMessageResponse]:
    """The moderation queue, oldest flag first."""
    return database.read(
        lambda s: admin_service.list_flagged_messages(s, max_count=max_count, processed=processed)
    )


@router.get("/flagged_messages/cursor", response_model=FlaggedMessagePage)
def get_flagged_messages_cursor(
    database: DatabaseDep,
    _client: TrustedClientDep,
    before: str | None = None,
    after: str | None = None,
    max_count: Annotated[int, Query(gt=0, le=1000)] = 10,
    desc: bool = False,
    processed: bool | None = None,
) -> FlaggedMessagePage:
    """A keyset page of the moderation queue; cursors are ``"<message_id>$<iso date>"``."""
    return database.read(
        lambda s: admin_service.flagged_messages_page(
            s, before=before, after=after, max_count=max_count, desc=desc, processed=processed
        )
    )


@router.post("/flagged_messages/{message_id}/processed", response_model=FlaggedMessageResponse)
def process_flagged_message(
    message_id: uuid.UUID, database: DatabaseDep, _client: TrustedClientDep
) -> FlaggedMessageResponse:
    """Mark a flagged message as handled."""
    return database.write(lambda s: admin_service.process_flagged_message(s, message_id))


@router.post("/merge_users", status_code=HTTPStatus.NO_CONTENT)
def merge_users(body: MergeUsersRequest, database: DatabaseDep, client: TrustedClientDep) -> None:
    """Move everything the source users did to the destination user and delete the sources."""
    merged = database.write(
        lambda s: users_service.merge_users(
            s, destination_user_id=body.destination_user_id, source_user_ids=body.source_user_ids
        )
    )
    log.info("merged %d users into %s (API client %s)", merged, body.destination_user_id, client.id)
