"""`/api/v1/frontend_messages`: the read routes of `/messages`, keyed by the calling client's own
frontend message id (the id it gave when it acknowledged the task)."""

from __future__ import annotations

from fastapi import APIRouter

from oasst.backend.api.params import MessageByFrontendId
from oasst.backend.services import messages as messages_service
from oasst.protocol import common as wire

router = APIRouter()


@router.get("/{frontend_message_id}")
def get_message(message: MessageByFrontendId) -> wire.Message:
    return message.render(messages_service.message_view)


@router.get("/{frontend_message_id}/conversation")
def get_conversation(message: MessageByFrontendId) -> wire.Conversation:
    return message.render(messages_service.conversation_view)


@router.get("/{frontend_message_id}/tree")
def get_tree(
    message: MessageByFrontendId, include_spam: bool = True, include_deleted: bool = False
) -> wire.MessageTree:
    return message.render_tree(include_spam=include_spam, include_deleted=include_deleted)


@router.get("/{frontend_message_id}/children")
def get_children(message: MessageByFrontendId) -> list[wire.Message]:
    return message.render(messages_service.children_view)


@router.get("/{frontend_message_id}/descendants")
def get_descendants(message: MessageByFrontendId) -> wire.MessageTree:
    return message.render(messages_service.descendants_view)


@router.get("/{frontend_message_id}/longest_conversation_in_tree")
def get_longest_conversation(message: MessageByFrontendId) -> wire.Conversation:
    return message.render(messages_service.longest_conversation_view)


@router.get("/{frontend_message_id}/max_children_in_tree")
def get_max_children(message: MessageByFrontendId) -> wire.MessageTree:
    return message.render(messages_service.max_children_view)
