"""The admin overview, the flagged-message queue, the trollboard, system status and (admins only) the
backend's parameters."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from oasst.client import BackendClient, OasstApiError
from oasst.protocol.common import Message
from oasst.protocol.stats import TimeFrame
from oasst.web.deps import AdminDep, BackendDep, CsrfDep, ModeratorDep, backend_user
from oasst.web.i18n import current_lang
from oasst.web.routes.admin_common import PAGE_SIZE, done_redirect, notice
from oasst.web.routes.leaderboard import time_frame_names
from oasst.web.templating import render

router = APIRouter()

Cursor = Annotated[str | None, Query(max_length=512)]
TROLLBOARD_SIZE = 100


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


@router.get("/admin")
async def overview(request: Request, account: ModeratorDep, backend: BackendDep) -> Response:
    """Tree state counts, message counts and the way to every admin page."""
    counts, stats, flagged = await asyncio.gather(
        backend.tree_state_counts(),
        backend.system_stats(),
        backend.flagged_messages_page(processed=False, max_count=PAGE_SIZE),
    )
    return render(
        request,
        "admin/index.html",
        section="overview",
        state_counts=sorted(counts.items()),
        stats=stats,
        open_flags=len(flagged.items),
        more_flags=flagged.next is not None,
    )


async def _message_or_none(backend: BackendClient, message_id: UUID) -> Message | None:
    try:
        return await backend.get_message(message_id)
    except OasstApiError:
        return None


@router.get("/admin/flagged")
async def flagged_queue(
    request: Request,
    account: ModeratorDep,
    backend: BackendDep,
    after: Cursor = None,
    before: Cursor = None,
    done: str | None = None,
) -> Response:
    """Messages that people reported or red-flagged and no moderator has handled yet, oldest flag first."""
    page = await backend.flagged_messages_page(
        processed=False, after=after, before=before, max_count=PAGE_SIZE
    )
    messages = await asyncio.gather(*(_message_or_none(backend, f.message_id) for f in page.items))
    return render(
        request,
        "admin/flagged.html",
        section="flagged",
        page=page,
        rows=list(zip(page.items, messages, strict=True)),
        notice=notice(done),
    )


@router.post("/admin/flagged/{message_id}/processed")
async def mark_processed(
    message_id: UUID, _csrf: CsrfDep, account: ModeratorDep, backend: BackendDep
) -> Response:
    await backend.process_flagged_message(message_id)
    return done_redirect("/admin/flagged", "processed")


@router.get("/admin/trollboard")
async def trollboard(
    request: Request,
    account: ModeratorDep,
    backend: BackendDep,
    time_frame: TimeFrame = TimeFrame.day,
    enabled: bool = True,
) -> Response:
    """Users with the most negative signals; ``enabled=false`` lists the banned ones instead."""
    board = await backend.trollboard(time_frame, enabled=enabled, max_count=TROLLBOARD_SIZE)
    return render(
        request,
        "admin/trollboard.html",
        section="trollboard",
        board=board,
        time_frame=time_frame.value,
        time_frames=time_frame_names(),
        enabled=enabled,
    )


@router.get("/admin/status")
async def status(request: Request, account: ModeratorDep, backend: BackendDep) -> Response:
    """What the backend reports: message counts, the tree manager, the tasks available (to this moderator,
    in the page's language), the public settings."""
    lang = current_lang.get()
    stats, manager, available, public = await asyncio.gather(
        backend.system_stats(),
        backend.tree_manager_stats(),
        backend.availability(backend_user(account), lang=lang),
        backend.public_settings(),
    )
    return render(
        request,
        "admin/status.html",
        section="status",
        stats=stats,
        manager=manager,
        available=sorted(available.items()),
        task_lang=lang,
        public_json=pretty_json(public.model_dump(mode="json")),
    )


@router.get("/admin/parameters")
async def parameters(request: Request, account: AdminDep, backend: BackendDep) -> Response:
    """Every backend setting (the backend masks secrets), for administrators."""
    settings = await backend.full_settings()
    return render(request, "admin/parameters.html", section="parameters", settings_json=pretty_json(settings))
