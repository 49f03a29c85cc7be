"""The front page, the terms of service, the language switch and the dashboard."""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Annotated

import anyio
from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from oasst.protocol.common import CreateFrontendUserRequest
from oasst.protocol.stats import TimeFrame, UserScore, level_progress
from oasst.web.deps import (
    AccountDep,
    BackendDep,
    CsrfDep,
    SettingsDep,
    SignedInDep,
    StoreDep,
    backend_user,
    backend_user_id,
    optional_account,
)
from oasst.web.errors import unless_missing
from oasst.web.i18n import current_lang
from oasst.web.routes.auth import safe_next
from oasst.web.tasks_catalog import TASK_KINDS
from oasst.web.templating import render

router = APIRouter()


@router.get("/")
async def front_page(request: Request) -> Response:
    if await optional_account(request) is not None:
        return RedirectResponse("/dashboard", status_code=HTTPStatus.SEE_OTHER)
    return render(request, "front.html")


@router.get("/tos")
async def terms_page(request: Request, account: SignedInDep, next: str | None = None) -> Response:
    return render(request, "tos.html", next=safe_next(next))


@router.post("/tos")
async def accept_terms(
    request: Request,
    _csrf: CsrfDep,
    account: SignedInDep,
    settings: SettingsDep,
    store: StoreDep,
    backend: BackendDep,
    next: Annotated[str, Form()] = "/dashboard",
) -> Response:
    user = backend_user(account)
    await backend.upsert_frontend_user(CreateFrontendUserRequest(**user.model_dump(), tos_acceptance=True))
    await anyio.to_thread.run_sync(store.accept_tos, account.id, settings.tos_version)
    return RedirectResponse(safe_next(next), status_code=HTTPStatus.SEE_OTHER)


@router.post("/lang")
async def switch_language(
    request: Request,
    _csrf: CsrfDep,
    settings: SettingsDep,
    lang: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/dashboard",
) -> Response:
    """Pick the language of tasks, which is also the language of the interface."""
    if lang in settings.languages:
        request.session["lang"] = lang
    return RedirectResponse(safe_next(next), status_code=HTTPStatus.SEE_OTHER)


@router.get("/dashboard")
async def dashboard(request: Request, account: AccountDep, backend: BackendDep) -> Response:
    user_id = await backend_user_id(request, account)
    lang = current_lang.get()
    counts, score, board = await asyncio.gather(
        backend.availability(backend_user(account), lang=lang),
        _score(backend, user_id),
        backend.leaderboard(TimeFrame.week, max_count=5),
    )
    points = score.leader_score if score is not None else 0
    level, this_level, next_level = level_progress(points)
    span = max(next_level - this_level, 1)
    return render(
        request,
        "dashboard.html",
        kinds=TASK_KINDS,
        counts=counts,
        score=score,
        points=points,
        level=level,
        next_level=next_level,
        progress=min(100, round(100 * (points - this_level) / span)),
        board=board,
        user_id=user_id,
        welcome=account.tasks_done == 0,
    )


async def _score(backend: BackendDep, user_id: object) -> UserScore | None:
    return await unless_missing(backend.user_score(str(user_id), TimeFrame.total), None)
