"""Model replies as synthetic messages (trusted keys): where they may go, and inserting one.

``GET /messages/synthetic_candidates`` lists accepted prompter messages of growing trees with room for
another assistant reply; ``POST /messages/{id}/synthetic_reply`` inserts a model's reply there. Mounted
before the messages router, so ``synthetic_candidates`` is not read as a message id.
"""

from __future__ import annotations

import uuid
from http import HTTPStatus
from typing import Annotated

from fastapi import APIRouter, Query

from oasst.backend.api.deps import DatabaseDep, SettingsDep, TrustedClientDep
from oasst.backend.services import synthetic as synthetic_service
from oasst.backend.services.conversations import message_to_wire
from oasst.protocol import common as wire

router = APIRouter()


@router.get("/synthetic_candidates")
def get_synthetic_candidates(
    database: DatabaseDep,
    client: TrustedClientDep,
    settings: SettingsDep,
    lang: Annotated[str | None, Query(max_length=32)] = None,
    model_name: Annotated[str | None, Query(max_length=1024)] = None,
    max_count: Annotated[int, Query(ge=1, le=synthetic_service.MAX_CANDIDATES)] = 100,
) -> list[wire.SyntheticCandidate]:
    """Parents a model may answer (none yet answered by ``model_name``), those with the fewest replies first."""
    return database.read(
        lambda s: synthetic_service.synthetic_candidates(
            s, settings=settings, lang=lang, model_name=model_name, max_count=max_count
        )
    )


@router.post("/{message_id}/synthetic_reply", status_code=HTTPStatus.CREATED)
def post_synthetic_reply(
    message_id: uuid.UUID,
    request: wire.SyntheticReplyRequest,
    database: DatabaseDep,
    client: TrustedClientDep,
    settings: SettingsDep,
) -> wire.Message:
    """Insert a model's reply to a prompter message of a growing tree; it is reviewed and ranked like a
    volunteer's."""
    return database.write(
        lambda s: message_to_wire(
            synthetic_service.add_synthetic_reply(
                s, client=client, settings=settings, parent_id=message_id, body=request
            )
        )
    )
