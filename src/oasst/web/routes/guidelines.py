"""Guidelines: one Markdown text per task type, shown beside each task and all together on /guidelines.

Texts live in ``oasst/web/guidelines/<name>.md``; a translation is ``<name>.<lang>.md`` beside it and is
used when the person works in that language. The first-task tutorial shows until the person has done a
task or dismisses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from http import HTTPStatus
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup

from oasst.web.accounts.store import AccountView
from oasst.web.deps import AccountDep, CsrfDep
from oasst.web.errors import not_found
from oasst.web.i18n import N_, current_lang
from oasst.web.i18n import gettext as _
from oasst.web.rendering import render_markdown
from oasst.web.routes.auth import safe_next
from oasst.web.templating import render

router = APIRouter()
GUIDELINES_DIR = Path(__file__).parent.parent / "guidelines"
# name -> title; the order of the /guidelines page
GUIDELINES = {
    "general": N_("General rules"),
    "initial_prompt": N_("Writing an initial prompt"),
    "assistant_reply": N_("Replying as the assistant"),
    "prompter_reply": N_("Replying as the user"),
    "ranking": N_("Ranking replies"),
    "labeling": N_("Labelling messages"),
}
FOR_TASK_TYPE = {
    "initial_prompt": "initial_prompt",
    "assistant_reply": "assistant_reply",
    "prompter_reply": "prompter_reply",
    "rank_assistant_replies": "ranking",
    "rank_prompter_replies": "ranking",
    "rank_initial_prompts": "ranking",
    "label_initial_prompt": "labeling",
    "label_assistant_reply": "labeling",
    "label_prompter_reply": "labeling",
}


@dataclass(frozen=True)
class Guideline:
    name: str
    title: str
    html: Markup


@cache
def _html(name: str, lang: str) -> Markup:
    path = GUIDELINES_DIR / f"{name}.{lang}.md"
    if not path.is_file():
        path = GUIDELINES_DIR / f"{name}.md"
    return Markup(render_markdown(path.read_text(encoding="utf-8")))  # sanitised


def guideline(name: str) -> Guideline:
    return Guideline(name, _(GUIDELINES[name]), _html(name, current_lang.get()))


def guideline_for(task_type: str) -> Guideline | None:
    name = FOR_TASK_TYPE.get(task_type)
    return guideline(name) if name else None


def tutorial_visible(request: Request, account: AccountView) -> bool:
    return account.tasks_done == 0 and not request.session.get("tutorial_dismissed")


@router.get("/guidelines")
async def guidelines_page(request: Request) -> Response:
    return render(request, "guidelines.html", guidelines=[guideline(name) for name in GUIDELINES])


@router.get("/guidelines/{name}")
async def guideline_page(request: Request, name: str) -> Response:
    if name not in GUIDELINES:
        raise not_found(_("There is no such guideline."))
    return render(request, "guidelines_one.html", guideline=guideline(name))


@router.post("/guidelines/tutorial/dismiss")
async def dismiss_tutorial(
    request: Request, _csrf: CsrfDep, account: AccountDep, next: Annotated[str, Form()] = "/dashboard"
) -> Response:
    request.session["tutorial_dismissed"] = True
    return RedirectResponse(safe_next(next), status_code=HTTPStatus.SEE_OTHER)
