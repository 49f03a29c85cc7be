"""``/text_labels``: free labels and reports (no task), and which labels a message may get.

A free label is one user's opinion of one message outside any task: posting again overwrites it. A report
(``is_report=True``) is a free label that also puts a red flag from that user on the message, which sends
it to the moderation queue. Free labels never count toward a message's acceptance (only task reviews do);
labels that answer a task are handed to the task-interaction service.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from oasst.backend.models import ApiClient, Message, TextLabels, utcnow
from oasst.backend.services import clients as clients_service
from oasst.backend.services import emojis as emojis_service
from oasst.backend.services import interactions, tree_manager
from oasst.backend.services import messages as messages_service
from oasst.backend.settings import Settings, TreeManagerConfiguration
from oasst.protocol import common as wire
from oasst.protocol import tasks as wire_tasks


def post_text_labels(
    session: Session, *, client: ApiClient, settings: Settings, body: wire_tasks.TextLabels
) -> uuid.UUID:
    """Store labels: with a ``task_id`` as that task's answer (returns the TaskDone id), else as a free
    label or report (returns the label row's id)."""
    if body.task_id is not None:
        return interactions.handle_text_labels(session, client=client, settings=settings, body=body)
    return store_free_labels(session, client=client, body=body, cfg=settings.tree_manager).id


def store_free_labels(
    session: Session, *, client: ApiClient, body: wire_tasks.TextLabels, cfg: TreeManagerConfiguration
) -> TextLabels:
    """Insert or overwrite the user's free label on the message; a report also adds a red flag (and
    runs auto-moderation on the message, as a red flag emoji does)."""
    user = clients_service.get_or_create_user(session, client, body.user)
    clients_service.ensure_user_can_work(user, enforce_tos=False)
    # The message row lock serialises this user's concurrent posts, so one free label per user remains.
    message = emojis_service.lock_for_emoji(
        session, client=client, message_id=body.message_id, red_flag=bool(body.is_report)
    )
    labels = {str(label): value for label, value in body.labels.items()}
    row = session.scalars(
        select(TextLabels).where(
            TextLabels.message_id == message.id, TextLabels.user_id == user.id, TextLabels.task_id.is_(None)
        )
    ).first()
    if row is None:
        row = TextLabels(
            id=uuid.uuid4(),
            user_id=user.id,
            api_client_id=client.id,
            message_id=message.id,
            created_date=utcnow(),
            task_id=None,
            is_report=False,
        )
        session.add(row)
    row.labels = labels
    row.text = body.text
    row.is_report = bool(row.is_report or body.is_report)
    if body.is_report:
        emojis_service.apply_emoji(
            session, message=message, user=user, emoji=wire.EmojiCode.red_flag, op=wire.EmojiOp.add
        )
        tree_manager.auto_moderate_message(session, message, cfg)
    session.flush()
    return row


def labels_for_message(message: Message, cfg: TreeManagerConfiguration) -> list[str]:
    """The configured label set for the message's kind: initial prompt, prompter or assistant reply."""
    if message.parent_id is None:
        return list(cfg.labels_initial_prompt)
    if message.role == "assistant":
        return list(cfg.labels_assistant_reply)
    return list(cfg.labels_prompter_reply)


def valid_labels(
    session: Session, *, client: ApiClient, message_id: uuid.UUID | None, cfg: TreeManagerConfiguration
) -> wire.ValidLabelsResponse:
    """Descriptions of the labels a message may get; without a message, every label but ``fails_task``."""
    if message_id is None:
        names = [label.value for label in wire.TextLabel if label != wire.TextLabel.fails_task]
    else:
        message = messages_service.get_message(session, client=client, message_id=message_id)
        names = labels_for_message(message, cfg)
    return wire.ValidLabelsResponse(valid_labels=[wire.describe_label(name) for name in names])


def report_labels() -> wire.ValidLabelsResponse:
    return wire.ValidLabelsResponse(
        valid_labels=[wire.describe_label(label.value) for label in wire.REPORT_LABELS]
    )
