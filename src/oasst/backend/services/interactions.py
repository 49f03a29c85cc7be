"""The task protocol after a task was handed out: ack, nack, close, and the three interactions.

Every function runs inside the caller's transaction and locks what it changes: the task row, then
the tree's state row. Checks happen under those locks, so two volunteers can never both take the last
reply slot of a parent or tree, and a failed check leaves nothing written.
"""

from __future__ import annotations

import functools
import uuid
from datetime import timedelta
from http import HTTPStatus
from typing import Any

from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session, defer
from sqlalchemy.orm.attributes import set_committed_value

from oasst.backend.db import is_postgres, lock_tree
from oasst.backend.errors import ErrorCode, OasstError
from oasst.backend.models import (
    ApiClient,
    Journal,
    Message,
    MessageReaction,
    Task,
    TextLabels,
    TreeState,
    User,
    utcnow,
)
from oasst.backend.models.base import UTCDateTime
from oasst.backend.services import clients as clients_service
from oasst.backend.services import emojis, tree_manager
from oasst.backend.services.candidates import LABEL_TASK_TYPES, RANK_TASK_TYPES, REPLY_TASK_TYPES
from oasst.backend.services.clients import TaskCaches, Worker
from oasst.backend.services.tree_manager import RANKING_PAYLOAD
from oasst.backend.settings import Settings
from oasst.protocol import tasks as wire
from oasst.protocol.common import EmojiCode

SKIP_EMOJI = {
    **dict.fromkeys(REPLY_TASK_TYPES, "_skip_reply"),
    **dict.fromkeys(LABEL_TASK_TYPES, "_skip_labeling"),
    **dict.fromkeys(RANK_TASK_TYPES, "_skip_ranking"),
}


def new_time_ordered_id() -> uuid.UUID:
    """A uuid7-style id (millisecond timestamp first) so journal rows sort by time."""
    millis = int(utcnow().timestamp() * 1000)
    rand = uuid.uuid4().int & ((1 << 74) - 1)
    value = (millis << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return uuid.UUID(int=value)


@functools.cache
def _task_stmt(by_frontend_id: bool, for_update: bool, with_payload: bool) -> Any:
    key = Task.frontend_message_id if by_frontend_id else Task.id
    stmt = (
        select(Task)
        .where(key == bindparam("key"), Task.api_client_id == bindparam("client_id"))
        .execution_options(populate_existing=True)
    )
    if not with_payload:  # the snapshot of what was shown can be large; ack and nack don't need it
        stmt = stmt.options(defer(Task.payload))
    return stmt.with_for_update() if for_update else stmt


def _lock_task(
    session: Session,
    client: ApiClient,
    key: object,
    *,
    by_frontend_id: bool,
    with_payload: bool = True,
    lock: bool = True,
) -> Task | None:
    """The client's task by id or frontend id, row-locked (on PostgreSQL) unless ``lock`` is off."""
    stmt = _task_stmt(by_frontend_id, lock and is_postgres(session), with_payload)
    task: Task | None = session.scalars(stmt, {"key": key, "client_id": client.id}).first()
    return task


@functools.cache
def _ack_stmt() -> Any:
    return (
        update(Task)
        .where(
            Task.id == bindparam("task_id"),
            Task.api_client_id == bindparam("client_id"),
            Task.ack.is_(None),
            Task.done.is_(False),
            Task.skipped.is_(False),
            or_(Task.expiry_date.is_(None), Task.expiry_date >= bindparam("now", type_=UTCDateTime())),
        )
        .values(ack=True, frontend_message_id=bindparam("key"))
        .returning(Task.id)
        .execution_options(synchronize_session=False)
    )


@functools.cache
def _frontend_id_taken_stmt() -> Any:
    return select(Task.id).where(
        Task.api_client_id == bindparam("client_id"), Task.frontend_message_id == bindparam("key")
    )


def _task_by_id(
    session: Session, client: ApiClient, task_id: uuid.UUID, *, with_payload: bool = True, lock: bool = True
) -> Task:
    task = _lock_task(session, client, task_id, by_frontend_id=False, with_payload=with_payload, lock=lock)
    if task is None:
        raise OasstError(f"Task {task_id} not found.", ErrorCode.TASK_NOT_FOUND, HTTPStatus.NOT_FOUND)
    return task


def held_task(session: Session, client: ApiClient, task_id: uuid.UUID) -> dict[str, Any]:
    """The task as it was handed out, while its user may still complete it (not done, skipped or expired)."""
    task = _task_by_id(session, client, task_id, lock=False)
    _check_open(task)
    return task.payload


def _task_by_frontend_id(session: Session, client: ApiClient, frontend_message_id: str) -> Task:
    task = _lock_task(session, client, frontend_message_id, by_frontend_id=True)
    if task is None:
        raise OasstError(
            f"No acknowledged task has frontend message id '{frontend_message_id}': ack the task first.",
            ErrorCode.TASK_NOT_FOUND,
            HTTPStatus.NOT_FOUND,
        )
    return task


# Statements of the hot paths, built once (building them costs more CPU than running them).
_LIVE = Message.deleted.is_(False) & (Message.review_result.is_(None) | Message.review_result.is_(True))


@functools.cache
def _siblings_stmt() -> Any:
    return select(Message.user_id, Message.role).where(Message.parent_id == bindparam("parent_id"), _LIVE)


@functools.cache
def _tree_size_stmt() -> Any:
    return select(func.count()).where(Message.message_tree_id == bindparam("tree_id"), _LIVE)


@functools.cache
def _review_count_stmt() -> Any:
    return (
        update(Message)
        .where(Message.id == bindparam("message_id"))
        .values(review_count=Message.review_count + 1)
    )


@functools.cache
def _message_stmt() -> Any:
    return (
        select(Message).where(Message.id == bindparam("message_id")).execution_options(populate_existing=True)
    )


def _check_open(task: Task) -> None:
    if task.done:
        raise OasstError("The task is already done.", ErrorCode.TASK_ALREADY_DONE)
    if task.skipped:
        raise OasstError("The task was skipped.", ErrorCode.TASK_ALREADY_SKIPPED)
    if task.expiry_date is not None and task.expiry_date < utcnow():
        raise OasstError("The task has expired; request a new one.", ErrorCode.TASK_EXPIRED)


def _validate_for_interaction(task: Task, user: Worker, types: tuple[str, ...]) -> None:
    _check_open(task)
    if not task.ack:
        raise OasstError("The task was not acknowledged: ack it first.", ErrorCode.TASK_NOT_ACK)
    if not task.collective and task.user_id != user.id:
        raise OasstError(
            "The task belongs to another user.", ErrorCode.TASK_NOT_ASSIGNED_TO_USER, HTTPStatus.FORBIDDEN
        )
    if task.task_type not in types:
        raise OasstError(
            f"A '{task.task_type}' task cannot be completed with this interaction.",
            ErrorCode.TASK_PAYLOAD_TYPE_MISMATCH,
        )


def ack_task(session: Session, *, client: ApiClient, task_id: uuid.UUID, frontend_message_id: str) -> None:
    """Bind the frontend's message id to the task. Idempotent for the same id.

    The common case is one conditional UPDATE; only when it changes nothing is the task read to say
    exactly why. A frontend id already used by another task violates a unique index (IntegrityError),
    which the route reports as ``INVALID_FRONTEND_MESSAGE_ID``.
    """
    params = {"task_id": task_id, "client_id": client.id, "key": frontend_message_id, "now": utcnow()}
    if session.connection().execute(_ack_stmt(), params).first() is not None:
        return
    task = _task_by_id(session, client, task_id, with_payload=False)
    if task.ack and task.frontend_message_id == frontend_message_id and not task.done:
        return
    _check_open(task)
    if task.ack:
        raise OasstError(
            "The task was already acknowledged with another message id.", ErrorCode.TASK_ALREADY_UPDATED
        )
    taken = session.scalar(_frontend_id_taken_stmt(), {"client_id": client.id, "key": frontend_message_id})
    if taken is not None:
        raise OasstError(
            f"Frontend message id '{frontend_message_id}' is already used by another task.",
            ErrorCode.INVALID_FRONTEND_MESSAGE_ID,
        )
    task.ack = True
    task.frontend_message_id = frontend_message_id


def nack_task(
    session: Session,
    *,
    settings: Settings,
    client: ApiClient,
    task_id: uuid.UUID,
    reason: str | None,
    release: bool = False,
) -> None:
    """Skip a task; the skipped item is hidden from this user's future tasks of that kind.

    ``release`` only gives the task back (a page left unfinished): its item is neither hidden nor counted
    as skipped by this user.
    """
    task = _task_by_id(session, client, task_id, with_payload=False)
    if task.skipped:
        return
    if task.done:
        raise OasstError("The task is already done and cannot be skipped.", ErrorCode.TASK_ALREADY_DONE)
    task.skipped = True
    task.skip_reason = reason
    if release:
        return
    emoji = SKIP_EMOJI.get(task.task_type)
    if emoji and task.parent_message_id is not None and task.user_id is not None:
        # lock order everywhere: tree, then message (as red flags do)
        if task.message_tree_id is not None:
            lock_tree(session, task.message_tree_id)
        user = session.get(User, task.user_id)
        if user is not None and session.get(Message, task.parent_message_id) is not None:
            message = emojis.add_emoji(
                session, message_id=task.parent_message_id, user=user, emoji=EmojiCode(emoji)
            )
            tree_manager.auto_moderate_message(session, message, settings.tree_manager)


def close_task(session: Session, *, client: ApiClient, frontend_message_id: str) -> None:
    """Close a collective task (the original's endpoint crashed)."""
    task = _task_by_frontend_id(session, client, frontend_message_id)
    if not task.collective:
        raise OasstError("Only collective tasks can be closed.", ErrorCode.TASK_NOT_COLLECTIVE)
    if task.done:
        raise OasstError("The task is already done.", ErrorCode.TASK_ALREADY_DONE)
    task.done = True


# The interactions write their new rows and counters with Core statements: an ORM object and its
# flush cost several times the statement itself on these hot paths. ORM objects that stay in use
# afterwards are told the new values (set_committed_value), so they neither go stale nor get dirty.


@functools.cache
def _insert_stmt(model: Any) -> Any:
    return insert(model)


def _insert(session: Session, model: Any, values: dict[str, Any]) -> None:
    session.connection().execute(_insert_stmt(model), values)


@functools.cache
def _done_stmt() -> Any:
    return update(Task).where(Task.id == bindparam("task_id")).values(done=True)


def _mark_done(session: Session, task: Task) -> None:
    session.connection().execute(_done_stmt(), {"task_id": task.id})
    set_committed_value(task, "done", True)


def _journal(
    session: Session,
    client: ApiClient,
    user: Worker,
    message_id: uuid.UUID | None,
    event: str,
    payload: dict[str, Any],
) -> None:
    values = {
        "id": new_time_ordered_id(),
        "user_id": user.id,
        "message_id": message_id,
        "api_client_id": client.id,
        "event_type": event,
        "event_payload": payload,
    }
    _insert(session, Journal, values)


def _prepare_user(
    session: Session, client: ApiClient, settings: Settings, wire_user: Any, cache: TaskCaches | None
) -> Worker:
    return clients_service.resolve_worker(
        session, client, wire_user, cache=cache, enforce_tos=settings.enforce_tos_acceptance
    )


def handle_text_reply(
    session: Session,
    *,
    client: ApiClient,
    settings: Settings,
    body: wire.TextReplyToMessage,
    cache: TaskCaches | None = None,
) -> uuid.UUID:
    """Store a prompt or reply; returns the new message's id."""
    user = _prepare_user(session, client, settings, body.user, cache)
    task = _task_by_frontend_id(session, client, body.message_id)
    _validate_for_interaction(task, user, ("initial_prompt", *REPLY_TASK_TYPES))
    text = body.text.strip()
    _check_text(session, settings, user, text)
    # a user_message_id already used by this client violates the message's unique index (2000)
    lang = body.lang or "en"
    message_id = uuid.uuid4()
    if task.task_type == "initial_prompt":
        place = {"parent_id": None, "message_tree_id": message_id, "depth": 0, "role": "prompter"}
    else:
        place = _reply_under(session, settings, task, user)
    values = {
        **place,
        "id": message_id,
        "lang": lang,
        "task_id": task.id,
        "user_id": user.id,
        "api_client_id": client.id,
        "frontend_message_id": body.user_message_id,
        "text": text,
    }
    _insert(session, Message, values)
    if task.task_type == "initial_prompt":
        # the tree state only reads the root's id and language
        tree_manager.create_tree_state(session, Message(id=message_id, lang=lang), settings.tree_manager)
    _mark_done(session, task)
    _journal(
        session,
        client,
        user,
        message_id,
        "text_reply_to_message",
        {"role": place["role"], "length": len(text)},
    )
    clients_service.record_activity(session, user, cache=cache)
    return message_id


def _check_text(session: Session, settings: Settings, user: Worker, text: str) -> None:
    if not text:
        raise OasstError("The message text is empty.", ErrorCode.TASK_MESSAGE_TEXT_EMPTY)
    if len(text) > settings.message_size_limit:
        raise OasstError(
            f"The message is {len(text)} characters long; at most {settings.message_size_limit} are allowed.",
            ErrorCode.TASK_MESSAGE_TOO_LONG,
        )
    since = utcnow() - timedelta(minutes=settings.duplicate_message_filter_window_minutes)
    params = {"user_id": user.id, "since": since, "text": text}
    if session.connection().execute(_duplicate_stmt(), params).first() is not None:
        raise OasstError("You sent the same text a moment ago.", ErrorCode.TASK_MESSAGE_DUPLICATED)


@functools.cache
def _duplicate_stmt() -> Any:
    return (
        select(Message.id)
        .where(
            Message.user_id == bindparam("user_id"),
            Message.created_date >= bindparam("since", type_=UTCDateTime()),
            Message.text == bindparam("text"),
        )
        .limit(1)
    )


def _reply_under(session: Session, settings: Settings, task: Task, user: Worker) -> dict[str, Any]:
    """Check, under the tree lock, that the parent and tree still have room; the reply's place."""
    assert task.parent_message_id is not None and task.message_tree_id is not None
    mts = lock_tree(session, task.message_tree_id)
    parent = session.get(Message, task.parent_message_id)
    if mts is None or parent is None:
        raise OasstError(
            "The message to reply to no longer exists.", ErrorCode.MESSAGE_NOT_FOUND, HTTPStatus.NOT_FOUND
        )
    if mts.state != TreeState.GROWING or not mts.active:
        code = ErrorCode.TREE_IN_ABORTED_STATE if mts.state in _ABORTED else ErrorCode.TASK_TREE_FULL
        raise OasstError(f"The conversation is no longer collecting replies (state {mts.state}).", code)
    siblings = session.execute(_siblings_stmt(), {"parent_id": parent.id}).all()
    if any(uid == user.id for uid, _ in siblings):
        raise OasstError("You already replied to this message.", ErrorCode.TASK_MESSAGE_DUPLICATE_REPLY)
    limit = mts.max_children_count
    if parent.role == "assistant":
        limit = min(limit, settings.tree_manager.num_prompter_replies)
    if len(siblings) >= limit or parent.depth >= mts.max_depth:
        raise OasstError("This message already has enough replies.", ErrorCode.TASK_PARENT_FULL)
    size = session.scalar(_tree_size_stmt(), {"tree_id": mts.message_tree_id})
    if (size or 0) >= mts.goal_tree_size:
        raise OasstError("The conversation tree has reached its goal size.", ErrorCode.TASK_TREE_FULL)
    session.connection().execute(_children_stmt(), {"b_parent_id": parent.id})
    set_committed_value(parent, "children_count", parent.children_count + 1)
    return {
        "parent_id": parent.id,
        "message_tree_id": parent.message_tree_id,
        "depth": parent.depth + 1,
        "role": "prompter" if task.task_type == "prompter_reply" else "assistant",
        "deleted": parent.deleted,
    }


@functools.cache
def _children_stmt() -> Any:
    return (
        update(Message)
        .where(Message.id == bindparam("b_parent_id"))
        .values(children_count=Message.children_count + 1)
    )


_ABORTED = {TreeState.ABORTED_LOW_GRADE, TreeState.HALTED_BY_MODERATOR}


@functools.cache
def _children_ids_stmt() -> Any:
    return select(Message.id).where(Message.parent_id == bindparam("parent_id"))


@functools.cache
def _ranking_count_stmt() -> Any:
    return (
        update(Message)
        .where(Message.id.in_(bindparam("ids", expanding=True)))
        .values(ranking_count=Message.ranking_count + 1)
    )


def handle_ranking(
    session: Session,
    *,
    client: ApiClient,
    settings: Settings,
    body: wire.MessageRanking,
    cache: TaskCaches | None = None,
) -> uuid.UUID:
    """Store a ranking ballot (index 0 = best) and check whether the tree can be scored."""
    user = _prepare_user(session, client, settings, body.user, cache)
    task = _task_by_frontend_id(session, client, body.message_id)
    _validate_for_interaction(task, user, RANK_TASK_TYPES)
    replies = task.payload.get("reply_messages", [])
    if sorted(body.ranking) != list(range(len(replies))):
        raise OasstError(
            f"The ranking must be a permutation of 0..{len(replies) - 1}, got {body.ranking}.",
            ErrorCode.INVALID_RANKING_VALUE,
        )
    ranked_ids = [uuid.UUID(replies[i]["id"]) for i in body.ranking]
    parent_id = uuid.UUID(task.payload["ranking_parent_id"])
    tree_id = uuid.UUID(task.payload["message_tree_id"])
    mts = lock_tree(session, tree_id)
    children = set(session.connection().execute(_children_ids_stmt(), {"parent_id": parent_id}).scalars())
    if mts is None or not set(ranked_ids) <= children:
        raise OasstError(
            "The ranked replies no longer belong to this conversation.", ErrorCode.CORRUPT_RANKING_RESULT
        )
    # no ranked reply is loaded in this session: a Core update leaves nothing stale
    session.connection().execute(_ranking_count_stmt(), {"ids": ranked_ids})
    payload = {
        "type": "message_ranking",
        "ranking": body.ranking,
        "ranked_message_ids": [str(i) for i in ranked_ids],
        "ranking_parent_id": str(parent_id),
        "message_tree_id": str(tree_id),
        "not_rankable": bool(body.not_rankable),
    }
    reaction = {
        "task_id": task.id,
        "user_id": user.id,
        "payload_type": RANKING_PAYLOAD,
        "payload": payload,
        "api_client_id": client.id,
        "message_id": parent_id,
    }
    _insert(session, MessageReaction, reaction)
    _mark_done(session, task)
    _journal(session, client, user, parent_id, "message_ranking", payload)
    clients_service.record_activity(session, user, cache=cache)
    tree_manager.check_condition_for_scoring_state(session, mts, settings.tree_manager)
    return task.id


def handle_text_labels(
    session: Session,
    *,
    client: ApiClient,
    settings: Settings,
    body: wire.TextLabels,
    cache: TaskCaches | None = None,
) -> uuid.UUID:
    """Store a review from a label task, count it, and decide acceptance once enough are in."""
    if body.task_id is None:
        raise OasstError("A task label needs task_id.", ErrorCode.TASK_NOT_FOUND, HTTPStatus.NOT_FOUND)
    user = _prepare_user(session, client, settings, body.user, cache)
    task = _task_by_id(session, client, body.task_id)
    _validate_for_interaction(task, user, LABEL_TASK_TYPES)
    if str(body.message_id) != task.payload.get("message_id"):
        raise OasstError(
            "The labels are for another message than the task's.", ErrorCode.TEXT_LABELS_WRONG_MESSAGE_ID
        )
    labels = {label.value: float(value) for label, value in body.labels.items()}
    invalid = sorted(set(labels) - set(task.payload.get("valid_labels", [])))
    if invalid:
        raise OasstError(
            f"Labels not valid for this task: {', '.join(invalid)}.", ErrorCode.TEXT_LABELS_INVALID_LABEL
        )
    missing = sorted(set(task.payload.get("mandatory_labels") or []) - set(labels))
    if missing:
        raise OasstError(
            f"Mandatory labels missing: {', '.join(missing)}.", ErrorCode.TEXT_LABELS_MANDATORY_LABEL_MISSING
        )
    mts = lock_tree(session, task.message_tree_id) if task.message_tree_id else None
    message = session.scalars(_message_stmt(), {"message_id": body.message_id}).first()
    if message is None:
        raise OasstError(
            "The labelled message no longer exists.", ErrorCode.MESSAGE_NOT_FOUND, HTTPStatus.NOT_FOUND
        )
    if message.user_id == user.id and not settings.allow_self_labeling:
        raise OasstError("You cannot review your own message.", ErrorCode.TEXT_LABELS_NO_SELF_LABELING)
    # a second review of the same message by the same user violates uq_text_labels_task_review (2054)
    review = {
        "id": task.id,
        "task_id": task.id,
        "user_id": user.id,
        "api_client_id": client.id,
        "message_id": message.id,
        "text": body.text,
        "labels": labels,
    }
    _insert(session, TextLabels, review)
    session.connection().execute(_review_count_stmt(), {"message_id": message.id})
    set_committed_value(message, "review_count", message.review_count + 1)
    _mark_done(session, task)
    clients_service.record_activity(session, user, cache=cache)
    if mts is not None:
        tree_manager.after_text_labels(session, message, mts, settings.tree_manager)
    return task.id


def handle_rating(
    session: Session,
    *,
    client: ApiClient,
    settings: Settings,
    body: wire.MessageRating,
    cache: TaskCaches | None = None,
) -> uuid.UUID:
    """Ratings belong to rate_summary tasks, which are never generated (as in the original)."""
    user = _prepare_user(session, client, settings, body.user, cache)
    task = _task_by_frontend_id(session, client, body.message_id)
    _validate_for_interaction(task, user, ("rate_summary",))
    return task.id
