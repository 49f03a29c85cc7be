"""`/api/v1/messages`: read, navigate, list and moderate messages by their internal id.

Reads need any API key (untrusted keys see only their own client's messages); moderation (delete,
undelete, edit, history, halting a tree) needs a trusted key. ``PUT /{id}/undelete`` needed only any key
in the original; here it is trusted, like delete.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from http import HTTPStatus
from typing import Annotated, TypeVar

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from oasst.backend.api.deps import ApiClientDep, DatabaseDep, FrontendUserDep, SettingsDep, TrustedClientDep
from oasst.backend.db import Database
from oasst.backend.models import ApiClient, Message, User
from oasst.backend.services import emojis as emojis_service
from oasst.backend.services import messages as messages_service
from oasst.backend.services import moderation
from oasst.protocol import common as wire

router = APIRouter()
T = TypeVar("T")
MaxCount = Annotated[int, Query(gt=0, le=messages_service.MAX_PAGE_SIZE)]


def read_view(
    database: Database,
    client: ApiClient,
    frontend_user: tuple[str, str] | None,
    message_id: uuid.UUID,
    view: messages_service.View[T],
) -> T:
    """Look the message up for ``client`` and render ``view`` of it for the reading user."""

    def work(session: Session) -> T:
        message = messages_service.get_message(session, client=client, message_id=message_id)
        reader = messages_service.find_reader(session, client=client, frontend_user=frontend_user)
        return view(session, message, reader)

    return database.read(work)


@router.get("/")
def query_messages(
    database: DatabaseDep,
    client: ApiClientDep,
    frontend_user: FrontendUserDep,
    auth_method: str | None = None,
    username: str | None = None,
    api_client_id: uuid.UUID | None = None,
    max_count: MaxCount = 10,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
    only_roots: bool = False,
    desc: bool = True,
    allow_deleted: bool = False,
    lang: str | None = None,
) -> list[wire.Message]:
    """Messages by creation date, newest first unless ``desc=false``."""
    filters = messages_service.MessageFilter(
        auth_method=auth_method,
        username=username,
        api_client_id=api_client_id,
        start_date=start_date,
        end_date=end_date,
        only_roots=only_roots,
        include_deleted=allow_deleted,
        lang=lang,
    )

    def work(session: Session) -> list[wire.Message]:
        reader = messages_service.find_reader(session, client=client, frontend_user=frontend_user)
        return messages_service.list_messages(
            session, client=client, filters=filters, desc=desc, max_count=max_count, reader=reader
        )

    return database.read(work)


@router.get("/cursor")
def query_messages_cursor(
    database: DatabaseDep,
    client: ApiClientDep,
    frontend_user: FrontendUserDep,
    before: str | None = None,
    after: str | None = None,
    user_id: uuid.UUID | None = None,
    auth_method: str | None = None,
    username: str | None = None,
    api_client_id: uuid.UUID | None = None,
    only_roots: bool = False,
    include_deleted: bool = False,
    max_count: MaxCount = 10,
    desc: bool = False,
    search_query: str | None = None,
    lang: str | None = None,
    include_user: bool = False,
) -> wire.MessagePage:
    """A keyset page: cursors look like ``<uuid>$<iso date>``; pass ``next`` as ``after``, ``prev`` as ``before``."""
    filters = messages_service.MessageFilter(
        user_id=user_id,
        auth_method=auth_method,
        username=username,
        api_client_id=api_client_id,
        only_roots=only_roots,
        include_deleted=include_deleted,
        lang=lang,
        search_query=search_query,
    )

    def work(session: Session) -> wire.MessagePage:
        reader = messages_service.find_reader(session, client=client, frontend_user=frontend_user)
        return messages_service.cursor_page(
            session,
            client=client,
            filters=filters,
            before=before,
            after=after,
            desc=desc,
            max_count=max_count,
            reader=reader,
            include_user=include_user,
        )

    return database.read(work)


@router.get("/{message_id}")
def get_message(
    message_id: uuid.UUID, database: DatabaseDep, client: ApiClientDep, frontend_user: FrontendUserDep
) -> wire.Message:
    return read_view(database, client, frontend_user, message_id, messages_service.message_view)


@router.get("/{message_id}/conversation")
def get_conversation(
    message_id: uuid.UUID, database: DatabaseDep, client: ApiClientDep, frontend_user: FrontendUserDep
) -> wire.Conversation:
    """The conversation from the tree's root down to this message."""
    return read_view(database, client, frontend_user, message_id, messages_service.conversation_view)


@router.get("/{message_id}/tree")
def get_tree(
    message_id: uuid.UUID,
    database: DatabaseDep,
    client: ApiClientDep,
    frontend_user: FrontendUserDep,
    include_spam: bool = True,
    include_deleted: bool = False,
) -> wire.MessageTree:
    """Every message of this message's tree (``include_spam=false``: only accepted ones)."""

    def view(session: Session, message: Message, reader: User | None) -> wire.MessageTree:
        return messages_service.tree_view(
            session, message, reader, include_spam=include_spam, include_deleted=include_deleted
        )

    return read_view(database, client, frontend_user, message_id, view)


@router.get("/{message_id}/tree/state")
def get_tree_state(
    message_id: uuid.UUID, database: DatabaseDep, client: ApiClientDep
) -> wire.MessageTreeStateResponse:
    def view(session: Session, message: Message, _reader: User | None) -> wire.MessageTreeStateResponse:
        return messages_service.tree_state_view(
            messages_service.get_tree_state(session, message.message_tree_id)
        )

    return read_view(database, client, None, message_id, view)


@router.put("/{message_id}/tree/state")
def put_tree_state(
    message_id: uuid.UUID, halt: bool, database: DatabaseDep, client: TrustedClientDep, settings: SettingsDep
) -> wire.MessageTreeStateResponse:
    """Halt the tree (``halt=true``) or resume it (``halt=false``)."""
    return database.write(
        lambda s: moderation.set_tree_halted(
            s, client=client, message_id=message_id, halt=halt, cfg=settings.tree_manager
        )
    )


@router.get("/{message_id}/children")
def get_children(
    message_id: uuid.UUID, database: DatabaseDep, client: ApiClientDep, frontend_user: FrontendUserDep
) -> list[wire.Message]:
    return read_view(database, client, frontend_user, message_id, messages_service.children_view)


@router.get("/{message_id}/descendants")
def get_descendants(
    message_id: uuid.UUID, database: DatabaseDep, client: ApiClientDep, frontend_user: FrontendUserDep
) -> wire.MessageTree:
    """The subtree below this message (``id`` is this message's id)."""
    return read_view(database, client, frontend_user, message_id, messages_service.descendants_view)


@router.get("/{message_id}/longest_conversation_in_tree")
def get_longest_conversation(
    message_id: uuid.UUID, database: DatabaseDep, client: ApiClientDep, frontend_user: FrontendUserDep
) -> wire.Conversation:
    return read_view(database, client, frontend_user, message_id, messages_service.longest_conversation_view)


@router.get("/{message_id}/max_children_in_tree")
def get_max_children(
    message_id: uuid.UUID, database: DatabaseDep, client: ApiClientDep, frontend_user: FrontendUserDep
) -> wire.MessageTree:
    """The message of the tree with the most accepted replies, followed by those replies."""
    return read_view(database, client, frontend_user, message_id, messages_service.max_children_view)


@router.delete("/{message_id}", status_code=HTTPStatus.NO_CONTENT)
def delete_message(
    message_id: uuid.UUID, database: DatabaseDep, client: TrustedClientDep, settings: SettingsDep
) -> None:
    """Soft-delete the message and all its descendants."""
    database.write(
        lambda s: moderation.delete_message(
            s, client=client, message_id=message_id, cfg=settings.tree_manager
        )
    )


@router.put("/{message_id}/undelete", status_code=HTTPStatus.ACCEPTED)
def undelete_message(
    message_id: uuid.UUID, database: DatabaseDep, client: TrustedClientDep, settings: SettingsDep
) -> None:
    """Undelete the message and all its ancestors."""
    database.write(
        lambda s: moderation.undelete_message(
            s, client=client, message_id=message_id, cfg=settings.tree_manager
        )
    )


@router.post("/{message_id}/edit")
def edit_message(
    message_id: uuid.UUID,
    request: wire.MessageEditRequest,
    database: DatabaseDep,
    client: TrustedClientDep,
    settings: SettingsDep,
) -> wire.Message:
    """Replace the text; the original and every edit are kept as revisions."""
    return database.write(
        lambda s: moderation.edit_message(
            s, client=client, message_id=message_id, request=request, settings=settings
        )
    )


@router.get("/{message_id}/history")
def get_history(
    message_id: uuid.UUID, database: DatabaseDep, client: TrustedClientDep, frontend_user: FrontendUserDep
) -> list[wire.MessageRevision]:
    """The message's revisions, oldest first."""

    def work(session: Session) -> list[wire.MessageRevision]:
        reader = messages_service.find_reader(session, client=client, frontend_user=frontend_user)
        return moderation.revision_history(session, client=client, message_id=message_id, reader=reader)

    return database.read(work)


@router.post("/{message_id}/emoji", status_code=HTTPStatus.ACCEPTED)
def post_emoji(
    message_id: uuid.UUID,
    request: wire.MessageEmojiRequest,
    database: DatabaseDep,
    client: ApiClientDep,
    settings: SettingsDep,
) -> wire.Message:
    """Toggle (default), add or remove an emoji; returns the message as that user now sees it.
    A red flag runs auto-moderation on the message at once."""
    return database.write(
        lambda s: emojis_service.handle_emoji_request(
            s, client=client, message_id=message_id, request=request, cfg=settings.tree_manager
        )
    )
