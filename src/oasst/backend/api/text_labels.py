"""`/api/v1/text_labels`: post labels (free labels, reports, or a label task's answer) and list labels."""

from __future__ import annotations

import uuid
from http import HTTPStatus

from fastapi import APIRouter

from oasst.backend.api.deps import ApiClientDep, DatabaseDep, SettingsDep
from oasst.backend.services import free_labels
from oasst.protocol import common as wire
from oasst.protocol import tasks as wire_tasks

router = APIRouter()


@router.post("/", status_code=HTTPStatus.NO_CONTENT)
def post_text_labels(
    body: wire_tasks.TextLabels, database: DatabaseDep, client: ApiClientDep, settings: SettingsDep
) -> None:
    """Without ``task_id``: a free label (a user's later post overwrites it) or, with ``is_report``, a
    report that also red-flags the message. With ``task_id``: the answer to that label task, accepted and
    counted exactly as through ``POST /tasks/interaction``."""
    database.write(lambda s: free_labels.post_text_labels(s, client=client, settings=settings, body=body))


@router.get("/valid_labels")
def get_valid_labels(
    database: DatabaseDep, client: ApiClientDep, settings: SettingsDep, message_id: uuid.UUID | None = None
) -> wire.ValidLabelsResponse:
    """The labels configured for the message's kind; without ``message_id`` every label but fails_task."""
    return database.read(
        lambda s: free_labels.valid_labels(s, client=client, message_id=message_id, cfg=settings.tree_manager)
    )


@router.get("/report_labels")
def get_report_labels() -> wire.ValidLabelsResponse:
    """The labels a report may carry (public, as in the original)."""
    return free_labels.report_labels()
