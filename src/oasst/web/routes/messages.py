"""Browsing messages: recent ones in the current language, your own, a message's whole tree, and what a
reader does with a message there (emoji reactions, a report, labels)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from typing import Annotated
from urllib.parse import urlencode
from uuid import UUID

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from oasst.protocol.common import EmojiCode, EmojiOp, LabelDescription, Message, TextLabel
from oasst.protocol.tasks import TextLabels
from oasst.web.deps import AccountDep, BackendDep, CsrfDep, backend_user, backend_user_id
from oasst.web.errors import forbidden, invalid, not_found
from oasst.web.i18n import current_lang
from oasst.web.i18n import gettext as _
from oasst.web.routes.auth import safe_next
from oasst.web.templating import render

router = APIRouter()

RECENT_COUNT = 20
OWN_PAGE_SIZE = 10
REACTIONS = (EmojiCode.thumbs_up, EmojiCode.thumbs_down)  # the ones a reader toggles with a button
MAX_REPORT_CHARS = 4096
LIKERT_STEPS = 5


@dataclass
class ThreadNode:
    """One message of a tree view with its replies, oldest first."""

    message: Message
    children: list[ThreadNode] = field(default_factory=list)


def build_thread(messages: list[Message]) -> list[ThreadNode]:
    """The tree's messages nested under their parents; a message whose parent is not shown is a root."""
    nodes = {m.id: ThreadNode(m) for m in messages}
    roots: list[ThreadNode] = []
    for node in nodes.values():
        parent = nodes.get(node.message.parent_id) if node.message.parent_id is not None else None
        (parent.children if parent is not None else roots).append(node)

    def created(node: ThreadNode) -> datetime:
        return node.message.created_date or datetime.min

    def sort(level: list[ThreadNode]) -> None:
        level.sort(key=created)
        for node in level:
            sort(node.children)

    sort(roots)
    return roots


def _message_id(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise not_found(_("There is no such message.")) from None


@router.get("/messages")
async def messages_index(
    request: Request,
    account: AccountDep,
    backend: BackendDep,
    after: str | None = None,
    before: str | None = None,
) -> Response:
    """Two columns: recent messages in the current language, and your own messages page by page."""
    me = backend_user(account)
    user_id = await backend_user_id(request, account)
    lang = current_lang.get()
    recent, own = await asyncio.gather(
        backend.list_messages(lang=lang, max_count=RECENT_COUNT, desc=True, as_user=me),
        backend.user_messages_page(
            user_id, after=after, before=before, desc=True, max_count=OWN_PAGE_SIZE, as_user=me
        ),
    )
    return render(
        request,
        "messages/index.html",
        recent=recent,
        own=own,
        next_url=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        prev_link=f"/messages?{urlencode({'before': own.prev})}" if own.prev else None,
        next_link=f"/messages?{urlencode({'after': own.next})}" if own.next else None,
    )


@router.get("/messages/{message_id}")
async def message_detail(
    request: Request,
    account: AccountDep,
    backend: BackendDep,
    message_id: str,
    sent: str | None = None,
) -> Response:
    """The whole tree of the message, threaded, with the message highlighted; moderators also see
    deleted messages."""
    wanted = _message_id(message_id)
    me = backend_user(account)
    await backend_user_id(request, account)  # the backend must know the reader to mark their emojis
    tree, labels = await asyncio.gather(
        backend.get_tree(wanted, include_spam=True, include_deleted=account.is_moderator, as_user=me),
        backend.valid_labels(wanted),
    )
    current = next((m for m in tree.messages if m.id == wanted), None)
    if current is None:  # deleted, and the reader is no moderator
        raise not_found(_("There is no such message."))
    return render(
        request,
        "messages/detail.html",
        thread=build_thread(tree.messages),
        current=current,
        labels=labels.valid_labels,
        likert_steps=LIKERT_STEPS,
        sent=sent if sent in ("report", "labels") else None,
        next_url=f"/messages/{wanted}",
    )


@router.post("/messages/{message_id}/emoji")
async def toggle_emoji(
    request: Request,
    _csrf: CsrfDep,
    account: AccountDep,
    backend: BackendDep,
    message_id: str,
    emoji: Annotated[str, Form()],
    next: Annotated[str | None, Form()] = None,
) -> Response:
    """Add the reader's reaction, or take it back if it was there; never on one's own message."""
    wanted = _message_id(message_id)
    if emoji not in {e.value for e in REACTIONS}:
        raise invalid(_("Unknown reaction."))
    me = backend_user(account)
    await backend_user_id(request, account)
    message = await backend.get_message(wanted, as_user=me)
    if message.user_is_author:
        raise forbidden(_("You cannot react to your own message."))
    await backend.post_emoji(wanted, me, emoji, EmojiOp.togggle)
    return _back(next, wanted)


@router.post("/messages/{message_id}/report")
async def report_message(
    request: Request,
    _csrf: CsrfDep,
    account: AccountDep,
    backend: BackendDep,
    message_id: str,
    text: Annotated[str, Form()] = "",
) -> Response:
    """A free-text report: stored as the reader's text label with ``is_report`` (which also red-flags the
    message for the moderators)."""
    wanted = _message_id(message_id)
    text = text.strip()
    if not text:
        raise invalid(_("Please say what is wrong with this message."))
    if len(text) > MAX_REPORT_CHARS:
        raise invalid(_("A report can be at most %(n)d characters long.") % {"n": MAX_REPORT_CHARS})
    await backend_user_id(request, account)
    report = TextLabels(user=backend_user(account), text=text, labels={}, message_id=wanted, is_report=True)
    await backend.post_text_labels(report)
    return RedirectResponse(f"/messages/{wanted}?sent=report", status_code=HTTPStatus.SEE_OTHER)


@router.post("/messages/{message_id}/labels")
async def label_message(
    request: Request,
    _csrf: CsrfDep,
    account: AccountDep,
    backend: BackendDep,
    message_id: str,
) -> Response:
    """The reader's own labels of the message (a later post replaces them), sent as the reader's real
    backend identity."""
    wanted = _message_id(message_id)
    form = await request.form()
    valid = (await backend.valid_labels(wanted)).valid_labels
    values = parse_labels(valid, {k: v for k, v in form.items() if isinstance(v, str)})
    if not values:
        raise invalid(_("Please set at least one label."))
    await backend_user_id(request, account)
    chosen = {TextLabel(name): value for name, value in values.items()}
    labels = TextLabels(user=backend_user(account), labels=chosen, message_id=wanted)
    await backend.post_text_labels(labels)
    return RedirectResponse(f"/messages/{wanted}?sent=labels", status_code=HTTPStatus.SEE_OTHER)


def parse_labels(valid: list[LabelDescription], form: dict[str, str]) -> dict[str, float]:
    """Form fields ``label-<name>`` to label values in [0, 1]: yes/no is 1 or 0, a flag is 1 when ticked
    and 0 otherwise, a likert answer 1..5 maps to 0, 0.25 … 1. Unanswered yes/no and likert are left out."""
    values: dict[str, float] = {}
    for label in valid:
        raw = form.get(f"label-{label.name}", "").strip()
        if label.widget == "flag":
            values[label.name] = 1.0 if raw else 0.0
        elif not raw:
            continue
        elif label.widget == "yes_no" and raw in ("0", "1"):
            values[label.name] = float(raw)
        elif label.widget == "likert" and raw.isdigit() and 1 <= int(raw) <= LIKERT_STEPS:
            values[label.name] = (int(raw) - 1) / (LIKERT_STEPS - 1)
        else:
            raise invalid(_("Invalid value for the label %(name)s.") % {"name": label.name})
    # only flags that were never touched: nothing was said
    return values if any(v or form.get(f"label-{k}") for k, v in values.items()) else {}


def _back(next_url: str | None, message_id: UUID) -> Response:
    target = safe_next(next_url) if next_url else f"/messages/{message_id}"
    return RedirectResponse(f"{target}#m-{message_id}", status_code=HTTPStatus.SEE_OTHER)
