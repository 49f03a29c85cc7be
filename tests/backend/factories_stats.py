"""Small factories for leaderboard, trollboard and stats tests: ORM rows inserted straight into the DB."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from oasst.backend.db import Database
from oasst.backend.models import (
    Message,
    MessageReaction,
    MessageTreeState,
    Task,
    TextLabels,
    TreeState,
    User,
    utcnow,
)
from oasst.backend.services.clients import find_api_client

T = TypeVar("T")


class StatsFactory:
    """Builds rows in one session, all owned by one API client."""

    def __init__(self, session: Session, api_client_id: uuid.UUID) -> None:
        self.session = session
        self.api_client_id = api_client_id

    def _add(self, row: T) -> T:
        self.session.add(row)
        self.session.flush()
        return row

    def user(self, name: str, **fields: Any) -> User:
        return self._add(
            User(
                id=uuid.uuid4(),
                username=name,
                auth_method="local",
                display_name=name.title(),
                api_client_id=self.api_client_id,
                **fields,
            )
        )

    def message(
        self,
        user: User | None,
        *,
        parent: Message | None = None,
        role: str | None = None,
        age: timedelta = timedelta(minutes=5),
        **fields: Any,
    ) -> Message:
        message_id = uuid.uuid4()
        if role is None:
            role = "prompter" if parent is None or parent.role == "assistant" else "assistant"
        return self._add(
            Message(
                id=message_id,
                parent_id=parent.id if parent else None,
                message_tree_id=parent.message_tree_id if parent else message_id,
                user_id=user.id if user else None,
                role=role,
                api_client_id=self.api_client_id,
                frontend_message_id=uuid.uuid4().hex,
                created_date=utcnow() - age,
                text=f"text {message_id}",
                depth=parent.depth + 1 if parent else 0,
                **fields,
            )
        )

    def messages(self, user: User, count: int, **fields: Any) -> list[Message]:
        return [self.message(user, **fields) for _ in range(count)]

    def tree_state(self, root: Message, state: TreeState, *, active: bool = False) -> MessageTreeState:
        return self._add(
            MessageTreeState(
                message_tree_id=root.id,
                goal_tree_size=12,
                max_depth=3,
                max_children_count=3,
                state=state.value,
                active=active,
                lang=root.lang,
            )
        )

    def label_task(
        self,
        user: User,
        *,
        mode: str,
        task_type: str = "label_assistant_reply",
        done: bool = True,
        age: timedelta = timedelta(minutes=5),
    ) -> Task:
        return self._add(
            Task(
                id=uuid.uuid4(),
                created_date=utcnow() - age,
                user_id=user.id,
                api_client_id=self.api_client_id,
                task_type=task_type,
                payload={"type": task_type, "mode": mode},
                done=done,
            )
        )

    def ranking(
        self,
        user: User,
        parent: Message,
        ranked: list[Message],
        *,
        nested: bool = False,
        age: timedelta = timedelta(minutes=5),
    ) -> MessageReaction:
        body = {"ranking": list(range(len(ranked))), "ranked_message_ids": [str(m.id) for m in ranked]}
        return self._add(
            MessageReaction(
                task_id=uuid.uuid4(),
                user_id=user.id,
                created_date=utcnow() - age,
                payload_type="RankingReactionPayload",
                payload={"payload_type": "RankingReactionPayload", "payload": body} if nested else body,
                api_client_id=self.api_client_id,
                message_id=parent.id,
            )
        )

    def labels(self, user: User, message: Message, labels: dict[str, float]) -> TextLabels:
        return self._add(
            TextLabels(
                id=uuid.uuid4(),
                user_id=user.id,
                api_client_id=self.api_client_id,
                message_id=message.id,
                labels=labels,
            )
        )


def build(database: Database, api_key: str, scenario: Callable[[StatsFactory], T]) -> T:
    """Run ``scenario`` with a factory for the client of ``api_key``, in one committed transaction."""

    def work(session: Session) -> T:
        client = find_api_client(session, api_key)
        assert client is not None
        return scenario(StatsFactory(session, client.id))

    return database.write(work)
