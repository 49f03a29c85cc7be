"""`/api/v1/messages`: read, navigate, list and moderate messages by their internal id.

Reads need any API key (untrusted keys see only their own client's messages); moderation (delete,
undelete, edit, history, halting a tree) needs a trusted key. ``PUT /{id}/undelete`` needed only any key
in the original; here it is trusted, like delete.
"""

from __future__ import annotations

import uuid
from http import HTTPStatus

from fastapi import APIRouter
from sqlalchemy.orm import Session

from oasst.backend.api.deps import ApiClientDep, DatabaseDep, FrontendUserDep, SettingsDep, TrustedClientDep
from oasst.backend.api.params import MessageById, MessageCursorQueryDep, MessageListQueryDep
from oasst.backend.services import emojis as emojis_service
from oasst.backend.services import messages as messages_service
from oasst.backend.services import moderation
from oasst.protocol import common as wire

router = APIRouter()


@router.get("/")
def query_messages(
    query: MessageListQueryDep,
    frontend_user: FrontendUserDep,
    auth_method: str | None = None,
    username: str | None = None,
    allow_deleted: bool = False,
) -> list[wire.Message]:
    """Messages by creation date, newest first unless ``desc=false``."""
    return query.read(
        frontend_user, auth_method=auth_method, username=username, include_deleted=allow_deleted
    )


@router.get("/cursor")
def query_messages_cursor(
    query: MessageCursorQueryDep,
    user_id: uuid.UUID | None = None,
    auth_method: str | None = None,
    username: str | None = None,
    api_client_id: uuid.UUID | None = None,
    search_query: str | None = None,
    include_user: bool = False,
) -> wire.MessagePage:
    """A keyset page: cursors look like ``<uuid>$<iso date>``; pass ``next`` as ``after``, ``prev`` as ``before``."""
    return query.read(
        include_user=include_user,
        user_id=user_id,
        auth_method=auth_method,
        username=username,
        api_client_id=api_client_id,
        search_query=search_query,
    )


@router.get("/{message_id}")
def get_message(message: MessageById) -> wire.Message:
    return message.render(messages_service.message_view)


@router.get("/{message_id}/conversation")
def get_conversation(message: MessageById) -> wire.Conversation:
    """The conversation from the tree's root down to this message."""
    return message.render(messages_service.conversation_view)


@router.get("/{message_id}/tree")
def get_tree(
    message: MessageById, include_spam: bool = True, include_deleted: bool = False
) -> wire.MessageTree:
    """Every message of this message's tree (``include_spam=false``: only accepted ones)."""
    return message.render_tree(include_spam=include_spam, include_deleted=include_deleted)


@router.get("/{message_id}/tree/state")
def get_tree_state(
    message_id: uuid.UUID, database: DatabaseDep, client: ApiClientDep
) -> wire.MessageTreeStateResponse:
    def work(session: Session) -> wire.MessageTreeStateResponse:
        message = messages_service.get_message(session, client=client, message_id=message_id)
        return messages_service.tree_state_view(
            messages_service.get_tree_state(session, message.message_tree_id)
        )

    return database.read(work)


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
def get_children(message: MessageById) -> list[wire.Message]:
    return message.render(messages_service.children_view)


@router.get("/{message_id}/descendants")
def get_descendants(message: MessageById) -> wire.MessageTree:
    """The subtree below this message (``id`` is this message's id)."""
    return message.render(messages_service.descendants_view)


@router.get("/{message_id}/longest_conversation_in_tree")
def get_longest_conversation(message: MessageById) -> wire.Conversation:
    return message.render(messages_service.longest_conversation_view)


@router.get("/{message_id}/max_children_in_tree")
def get_max_children(message: MessageById) -> wire.MessageTree:
    """The message of the tree with the most accepted replies, followed by those replies."""
    return message.render(messages_service.max_children_view)


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
