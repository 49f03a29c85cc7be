"""`/api/v1/frontend_messages`: the read routes of `/messages`, keyed by the calling client's own
frontend message id (the id it gave when it acknowledged the task)."""

from __future__ import annotations

from typing import TypeVar

from fastapi import APIRouter
from sqlalchemy.orm import Session

from oasst.backend.api.deps import ApiClientDep, DatabaseDep, FrontendUserDep
from oasst.backend.db import Database
from oasst.backend.models import ApiClient, Message, User
from oasst.backend.services import messages as messages_service
from oasst.protocol import common as wire

router = APIRouter()
T = TypeVar("T")


def read_view(
    database: Database,
    client: ApiClient,
    frontend_user: tuple[str, str] | None,
    frontend_message_id: str,
    view: messages_service.View[T],
) -> T:
    def work(session: Session) -> T:
        message = messages_service.get_message_by_frontend_id(
            session, client=client, frontend_message_id=frontend_message_id
        )
        reader = messages_service.find_reader(session, client=client, frontend_user=frontend_user)
        return view(session, message, reader)

    return database.read(work)


@router.get("/{frontend_message_id}")
def get_message(
    frontend_message_id: str, database: DatabaseDep, client: ApiClientDep, frontend_user: FrontendUserDep
) -> wire.Message:
    return read_view(database, client, frontend_user, frontend_message_id, messages_service.message_view)


@router.get("/{frontend_message_id}/conversation")
def get_conversation(
    frontend_message_id: str, database: DatabaseDep, client: ApiClientDep, frontend_user: FrontendUserDep
) -> wire.Conversation:
    return read_view(database, client, frontend_user, frontend_message_id, messages_service.conversation_view)


@router.get("/{frontend_message_id}/tree")
def get_tree(
    frontend_message_id: str,
    database: DatabaseDep,
    client: ApiClientDep,
    frontend_user: FrontendUserDep,
    include_spam: bool = True,
    include_deleted: bool = False,
) -> wire.MessageTree:
    def view(session: Session, message: Message, reader: User | None) -> wire.MessageTree:
        return messages_service.tree_view(
            session, message, reader, include_spam=include_spam, include_deleted=include_deleted
        )

    return read_view(database, client, frontend_user, frontend_message_id, view)


@router.get("/{frontend_message_id}/children")
def get_children(
    frontend_message_id: str, database: DatabaseDep, client: ApiClientDep, frontend_user: FrontendUserDep
) -> list[wire.Message]:
    return read_view(database, client, frontend_user, frontend_message_id, messages_service.children_view)


@router.get("/{frontend_message_id}/descendants")
def get_descendants(
    frontend_message_id: str, database: DatabaseDep, client: ApiClientDep, frontend_user: FrontendUserDep
) -> wire.MessageTree:
    return read_view(database, client, frontend_user, frontend_message_id, messages_service.descendants_view)


@router.get("/{frontend_message_id}/longest_conversation_in_tree")
def get_longest_conversation(
    frontend_message_id: str, database: DatabaseDep, client: ApiClientDep, frontend_user: FrontendUserDep
) -> wire.Conversation:
    return read_view(
        database, client, frontend_user, frontend_message_id, messages_service.longest_conversation_view
    )


@router.get("/{frontend_message_id}/max_children_in_tree")
def get_max_children(
    frontend_message_id: str, database: DatabaseDep, client: ApiClientDep, frontend_user: FrontendUserDep
) -> wire.MessageTree:
    return read_view(database, client, frontend_user, frontend_message_id, messages_service.max_children_view)
