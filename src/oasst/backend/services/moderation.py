"""Moderator actions on messages: recursive soft delete, undelete, edits with history, halt/resume.

Every action that changes a tree locks its state row first (:func:`oasst.backend.db.lock_tree`), keeps
``children_count`` equal to the number of non-deleted replies, and then lets the tree manager re-check the
tree's state (a tree whose accepted messages were deleted may stop growing; undeleting may let it move on).
Callers check that the API client is trusted; these functions only check that the message exists.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from oasst.backend.db import lock_tree
from oasst.backend.errors import ErrorCode, OasstError
from oasst.backend.models import ApiClient, Message, MessageRevision, User, utcnow
from oasst.backend.services import clients as clients_service
from oasst.backend.services import messages as messages_service
from oasst.backend.services import tree_manager
from oasst.backend.settings import Settings, TreeManagerConfiguration
from oasst.protocol import common as wire


def _locked_tree(session: Session, message: Message) -> dict[uuid.UUID, Message]:
    """Lock the message's tree and load all its messages fresh, by id."""
    lock_tree(session, message.message_tree_id)
    stmt = select(Message).where(Message.message_tree_id == message.message_tree_id)
    return {m.id: m for m in session.scalars(stmt.execution_options(populate_existing=True))}


def _update_children_counts(tree: dict[uuid.UUID, Message]) -> None:
    counts = dict.fromkeys(tree, 0)
    for m in tree.values():
        if m.parent_id in counts and not m.deleted:
            counts[m.parent_id] += 1
    for message_id, count in counts.items():
        if tree[message_id].children_count != count:
            tree[message_id].children_count = count


def update_children_counts(session: Session, tree_id: uuid.UUID) -> None:
    """Recount every message's non-deleted replies in one tree (after deletes, undeletes or purges)."""
    stmt = select(Message).where(Message.message_tree_id == tree_id)
    _update_children_counts({m.id: m for m in session.scalars(stmt)})
    session.flush()


def delete_message(
    session: Session, *, client: ApiClient, message_id: uuid.UUID, cfg: TreeManagerConfiguration
) -> list[uuid.UUID]:
    """Soft-delete the message and everything below it; returns the ids that were marked deleted."""
    message = messages_service.get_message(session, client=client, message_id=message_id)
    tree = _locked_tree(session, message)
    by_parent: dict[uuid.UUID | None, list[Message]] = {}
    for m in tree.values():
        by_parent.setdefault(m.parent_id, []).append(m)
    marked: list[uuid.UUID] = []
    stack = [tree[message.id]]
    while stack:
        current = stack.pop()
        if not current.deleted:
            current.deleted = True
            marked.append(current.id)
        stack.extend(by_parent.get(current.id, []))
    _update_children_counts(tree)
    session.flush()
    tree_manager.recheck_tree(session, message.message_tree_id, cfg)
    return marked


def undelete_message(
    session: Session, *, client: ApiClient, message_id: uuid.UUID, cfg: TreeManagerConfiguration
) -> list[uuid.UUID]:
    """Undelete the message and all its ancestors (its descendants stay as they are)."""
    message = messages_service.get_message(session, client=client, message_id=message_id)
    tree = _locked_tree(session, message)
    restored: list[uuid.UUID] = []
    current: Message | None = tree[message.id]
    while current is not None:
        if current.deleted:
            current.deleted = False
            restored.append(current.id)
        current = tree.get(current.parent_id) if current.parent_id is not None else None
    _update_children_counts(tree)
    session.flush()
    tree_manager.recheck_tree(session, message.message_tree_id, cfg)
    return restored


def _check_text(text: str, *, size_limit: int) -> None:
    if not text.strip():
        raise OasstError("The new text is empty.", ErrorCode.TASK_MESSAGE_TEXT_EMPTY)
    if len(text) > size_limit:
        raise OasstError(
            f"The new text is {len(text)} characters long; the limit is {size_limit}.",
            ErrorCode.TASK_MESSAGE_TOO_LONG,
        )


def edit_message(
    session: Session,
    *,
    client: ApiClient,
    message_id: uuid.UUID,
    request: wire.MessageEditRequest,
    settings: Settings,
) -> wire.Message:
    """Replace the text, keeping every version: the first edit also saves the original text (by its author,
    at its creation date). Reviews and rankings stay as they are, as in the original."""
    _check_text(request.new_content, size_limit=settings.message_size_limit)
    editor = clients_service.get_or_create_user(session, client, request.user)
    message = messages_service.get_message_for_update(session, client=client, message_id=message_id)
    has_history = session.scalar(
        select(MessageRevision.id).where(MessageRevision.message_id == message.id).limit(1)
    )
    if has_history is None:
        session.add(
            MessageRevision(
                id=uuid.uuid4(),
                message_id=message.id,
                user_id=message.user_id,
                text=message.text,
                created_date=message.created_date,
            )
        )
    session.add(
        MessageRevision(
            id=uuid.uuid4(),
            message_id=message.id,
            user_id=editor.id,
            text=request.new_content,
            created_date=utcnow(),
        )
    )
    message.text = request.new_content
    message.edited = True
    session.flush()
    return messages_service.message_view(session, message, editor)


def revision_history(
    session: Session, *, client: ApiClient, message_id: uuid.UUID, reader: User | None = None
) -> list[wire.MessageRevision]:
    """All versions of the message's text, oldest first (empty if it was never edited)."""
    message = messages_service.get_message(session, client=client, message_id=message_id)
    stmt = (
        select(MessageRevision)
        .where(MessageRevision.message_id == message.id)
        .order_by(MessageRevision.created_date, MessageRevision.id)
    )
    return [
        wire.MessageRevision(
            id=r.id,
            text=r.text,
            message_id=r.message_id,
            user_id=r.user_id,
            created_date=r.created_date,
            user_is_author=(r.user_id == reader.id) if reader is not None else None,
        )
        for r in session.scalars(stmt)
    ]


def set_tree_halted(
    session: Session, *, client: ApiClient, message_id: uuid.UUID, halt: bool, cfg: TreeManagerConfiguration
) -> wire.MessageTreeStateResponse:
    """Halt the message's tree (``halted_by_moderator``) or resume it, via the tree manager."""
    message = messages_service.get_message(session, client=client, message_id=message_id)
    messages_service.get_tree_state(session, message.message_tree_id)
    if halt:
        mts = tree_manager.halt_tree(session, message.message_tree_id, cfg)
    else:
        mts = tree_manager.resume_tree(session, message.message_tree_id, cfg)
    return messages_service.tree_state_view(mts)
