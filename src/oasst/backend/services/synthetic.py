"""Model-generated replies in growing trees: the last step of the loop (people rank model output).

A trusted client posts a model's reply to a prompter message; it becomes an assistant message with
``synthetic=True`` and ``model_name``, written by no user. From then on it is an ordinary reply: it waits
for reviews (``review_result`` null) like a volunteer's, counts against the parent's and the tree's
limits, and is ranked with its human siblings (ranking tasks show ``synthetic`` only when every reply
of the set is synthetic, as in the original).

The checks are a volunteer's reply's (``interactions._reply_under``), under the same tree lock, so
concurrent inserts — synthetic or human — never exceed ``max_children_count``, ``max_depth`` or
``goal_tree_size``. Reply tasks that volunteers are working on right now hold their slot: a model never
takes the place a person is writing into. Each model replies to a parent at most once.
"""

from __future__ import annotations

import functools
import uuid
from datetime import timedelta
from http import HTTPStatus
from typing import Any

from sqlalchemy import Integer, String, and_, bindparam, func, select
from sqlalchemy.orm import Session, aliased

from oasst.backend.db import lock_tree
from oasst.backend.errors import ErrorCode, OasstError
from oasst.backend.models import ApiClient, Message, MessageTreeState, Task, TreeState, utcnow
from oasst.backend.models.base import UTCDateTime
from oasst.backend.services.candidates import counts_in_tree, open_reply_task
from oasst.backend.services.conversations import conversation_of, load_tree, path_in
from oasst.backend.settings import Settings
from oasst.protocol import common as wire

MAX_CANDIDATES = 1000

_LIVE = Message.deleted.is_(False) & (Message.review_result.is_(None) | Message.review_result.is_(True))
_ABORTED = {TreeState.ABORTED_LOW_GRADE, TreeState.HALTED_BY_MODERATOR}


def _invalid_parent(why: str) -> OasstError:
    return OasstError(
        f"A synthetic reply answers an accepted prompter message; {why}.",
        ErrorCode.SYNTHETIC_REPLY_INVALID_PARENT,
    )


def add_synthetic_reply(
    session: Session,
    *,
    client: ApiClient,
    settings: Settings,
    parent_id: uuid.UUID,
    body: wire.SyntheticReplyRequest,
) -> Message:
    """Insert ``body`` as a synthetic assistant reply to ``parent_id``; the caller's key must be trusted."""
    text = body.text.strip()
    if not text:
        raise OasstError("The message text is empty.", ErrorCode.TASK_MESSAGE_TEXT_EMPTY)
    if len(text) > settings.message_size_limit:
        raise OasstError(
            f"The reply is {len(text)} characters long; at most {settings.message_size_limit} are allowed.",
            ErrorCode.TASK_MESSAGE_TOO_LONG,
        )
    found = session.get(Message, parent_id)
    if found is None:
        raise OasstError("Message not found.", ErrorCode.MESSAGE_NOT_FOUND, HTTPStatus.NOT_FOUND)
    mts = lock_tree(session, found.message_tree_id)
    # read again under the lock: counters may have moved while we waited for it
    parent = session.get(Message, parent_id, populate_existing=True)
    if parent is None:
        raise OasstError("Message not found.", ErrorCode.MESSAGE_NOT_FOUND, HTTPStatus.NOT_FOUND)
    if parent.role != "prompter":
        raise _invalid_parent("this one is an assistant message")
    if parent.deleted:
        raise _invalid_parent("this one is deleted")
    if parent.review_result is not True:
        raise _invalid_parent("this one has not been accepted by reviewers (yet)")
    if mts is None or mts.state != TreeState.GROWING or not mts.active:
        state = mts.state if mts is not None else "none"
        code = ErrorCode.TREE_IN_ABORTED_STATE if state in _ABORTED else ErrorCode.TASK_TREE_FULL
        raise OasstError(f"The conversation is not collecting replies (tree state {state}).", code)
    model_name = body.model_name.strip()
    siblings = session.execute(_siblings_stmt(), {"parent_id": parent.id}).all()
    if any(synthetic and name == model_name and not deleted for name, synthetic, deleted, _ in siblings):
        raise OasstError(
            f"Model {model_name!r} already replied to this message.", ErrorCode.TASK_MESSAGE_DUPLICATE_REPLY
        )
    since = utcnow() - timedelta(seconds=settings.tree_manager.recent_tasks_span_sec)
    live = sum(1 for _, _, _, alive in siblings if alive)
    writing = session.scalar(_open_reply_tasks_stmt(), {"parent_id": parent.id, "since": since}) or 0
    if live + writing >= mts.max_children_count or parent.depth >= mts.max_depth:
        raise OasstError("This message already has enough replies.", ErrorCode.TASK_PARENT_FULL)
    size = session.scalar(_tree_size_stmt(), {"tree_id": mts.message_tree_id}) or 0
    reserved = session.scalar(_tree_reply_tasks_stmt(), {"tree_id": mts.message_tree_id, "since": since}) or 0
    if size + reserved >= mts.goal_tree_size:
        raise OasstError("The conversation tree has reached its goal size.", ErrorCode.TASK_TREE_FULL)
    message_id = uuid.uuid4()
    message = Message(
        id=message_id,
        parent_id=parent.id,
        message_tree_id=parent.message_tree_id,
        task_id=None,
        user_id=None,
        role="assistant",
        api_client_id=client.id,
        frontend_message_id=f"synthetic-{message_id}",
        created_date=utcnow(),
        text=text,
        lang=body.lang or parent.lang,
        depth=parent.depth + 1,
        children_count=0,
        deleted=False,
        review_count=0,
        review_result=None,  # reviewed like a volunteer's reply before it can be ranked
        ranking_count=0,
        synthetic=True,
        edited=False,
        model_name=model_name,
        emojis={},
    )
    session.add(message)
    parent.children_count += 1
    session.flush()
    return message


@functools.cache
def _siblings_stmt() -> Any:
    # (model_name, synthetic, deleted, counts against the limit)
    return select(Message.model_name, Message.synthetic, Message.deleted, _LIVE).where(
        Message.parent_id == bindparam("parent_id")
    )


def _reply_tasks(*where: Any) -> Any:
    return select(func.count()).where(
        *where,
        open_reply_task(Task, bindparam("since", type_=UTCDateTime())),
    )


@functools.cache
def _open_reply_tasks_stmt() -> Any:
    return _reply_tasks(Task.parent_message_id == bindparam("parent_id"))


@functools.cache
def _tree_reply_tasks_stmt() -> Any:
    return _reply_tasks(Task.message_tree_id == bindparam("tree_id"))


@functools.cache
def _tree_size_stmt() -> Any:
    return select(func.count()).where(Message.message_tree_id == bindparam("tree_id"), _LIVE)


# ------------------------------------------------------------------------------------------ candidates


def synthetic_candidates(
    session: Session,
    *,
    settings: Settings,
    lang: str | None = None,
    model_name: str | None = None,
    max_count: int = 100,
) -> list[wire.SyntheticCandidate]:
    """Accepted prompter messages of growing trees that may take one more assistant reply (and none yet
    from ``model_name``), those with the fewest replies first, each with its conversation."""
    since = utcnow() - timedelta(seconds=settings.tree_manager.recent_tasks_span_sec)
    params = {
        "lang": lang,
        "model_name": model_name,
        "since": since,
        "limit": max(1, min(max_count, MAX_CANDIDATES)),
    }
    rows = (
        session.connection().execute(_candidates_stmt(lang is not None, model_name is not None), params).all()
    )
    trees: dict[uuid.UUID, dict[uuid.UUID, Message]] = {}
    result = []
    for parent_id, tree_id, parent_lang, replies in rows:
        tree = trees.get(tree_id)
        if tree is None:
            tree = trees[tree_id] = load_tree(session, tree_id)
        thread = path_in(tree, parent_id)
        result.append(
            wire.SyntheticCandidate(
                parent_id=parent_id,
                message_tree_id=tree_id,
                lang=parent_lang,
                replies=int(replies),
                conversation=conversation_of(session, thread, emojis={}),
            )
        )
    return result


@functools.cache
def _candidates_stmt(by_lang: bool, by_model: bool) -> Any:
    child = aliased(Message)
    task = aliased(Task)
    since = bindparam("since", type_=UTCDateTime())
    live_children = (
        select(func.count())
        .where(
            child.parent_id == Message.id,
            counts_in_tree(child),
        )
        .scalar_subquery()
    )
    writing = (
        select(func.count())
        .where(
            task.parent_message_id == Message.id,
            open_reply_task(task, since),
        )
        .scalar_subquery()
    )
    tree_child = aliased(Message)
    tree_size = (
        select(func.count())
        .where(
            tree_child.message_tree_id == MessageTreeState.message_tree_id,
            counts_in_tree(tree_child),
        )
        .scalar_subquery()
    )
    tree_task = aliased(Task)
    tree_reserved = (
        select(func.count())
        .where(
            tree_task.message_tree_id == MessageTreeState.message_tree_id,
            open_reply_task(tree_task, since),
        )
        .scalar_subquery()
    )
    conditions = [
        MessageTreeState.state == TreeState.GROWING.value,
        MessageTreeState.active.is_(True),
        Message.role == "prompter",
        Message.deleted.is_(False),
        Message.review_result.is_(True),
        Message.depth < MessageTreeState.max_depth,
        live_children + writing < MessageTreeState.max_children_count,
        tree_size + tree_reserved < MessageTreeState.goal_tree_size,
    ]
    if by_lang:
        conditions.append(Message.lang == bindparam("lang", type_=String()))
    if by_model:
        own = aliased(Message)
        conditions.append(
            ~select(own.id)
            .where(
                and_(
                    own.parent_id == Message.id,
                    own.synthetic.is_(True),
                    own.deleted.is_(False),
                    own.model_name == bindparam("model_name", type_=String()),
                )
            )
            .exists()
        )
    return (
        select(Message.id, Message.message_tree_id, Message.lang, live_children)
        .join(MessageTreeState, MessageTreeState.message_tree_id == Message.message_tree_id)
        .where(*conditions)
        .order_by(live_children, Message.created_date, Message.id)
        .limit(bindparam("limit", type_=Integer()))
    )


__all__ = ["MAX_CANDIDATES", "add_synthetic_reply", "synthetic_candidates"]
