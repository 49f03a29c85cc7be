"""Task pages: fetch a task, edit → review → submit (ack + interaction), or skip it with a reason.

The page carries everything its submit needs as hidden form fields: the task as the backend sent it
(to re-render it with an error and to know the reply count and mandatory labels), and the frontend ids
made when the page was shown (so a resubmit after an error acks idempotently). The backend checks
that the task belongs to the person, so a tampered field can only hurt its sender; the website still
checks what a person can get wrong (empty text, a ranking that is not a permutation, unanswered
mandatory labels) before anything is sent.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from uuid import UUID

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import FormData

from oasst.client import ApiErrorCode, BackendClient, Interaction, OasstApiError
from oasst.protocol.common import LabelDescription, LabelWidget, TextLabel, describe_label
from oasst.protocol.tasks import (
    AnyTask,
    LabelAssistantReplyTask,
    LabelInitialPromptTask,
    LabelPrompterReplyTask,
    LabelTaskMode,
    MessageRanking,
    TaskDone,
    TextLabels,
    TextReplyToMessage,
)
from oasst.web.accounts.store import AccountView
from oasst.web.deps import AccountDep, BackendDep, CsrfDep, StoreDep, backend_user
from oasst.web.errors import WebError, WebErrorCode, invalid, not_found
from oasst.web.i18n import N_, current_lang, language_name
from oasst.web.i18n import gettext as _
from oasst.web.rendering import render_markdown
from oasst.web.routes.guidelines import guideline_for, tutorial_visible
from oasst.web.tasks_catalog import BY_SLUG, TASK_KINDS, TaskKind
from oasst.web.templating import render

router = APIRouter()

TASK_ADAPTER: TypeAdapter[AnyTask] = TypeAdapter(AnyTask)
CREATE_TYPES = ("initial_prompt", "assistant_reply", "prompter_reply")
RANK_TYPES = ("rank_assistant_replies", "rank_prompter_replies", "rank_initial_prompts")
LABEL_TYPES = ("label_initial_prompt", "label_assistant_reply", "label_prompter_reply")
FRONTEND_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_OPEN_TASKS = 12
# (value, text) of the skip reasons offered; the chosen text plus any free text is the nack reason
SKIP_REASONS = [
    ("too_hard", N_("I don't know enough about this topic")),
    ("wrong_language", N_("It is in a language I don't read well")),
    ("inappropriate", N_("The content is inappropriate or offensive")),
    ("unclear", N_("The task or the message is unclear")),
    ("no_time", N_("It would take me too long right now")),
    ("other", N_("Another reason")),
]
LIKERT_POINTS = 5
# per label: the question shown (yes/no), or the two ends of a five-point scale (likert)
YES_NO_QUESTIONS = {
    "spam": N_("Is the message spam?"),
    "fails_task": N_("Does the reply fail to do what was asked?"),
}
FLAG_HELP = {
    "pii": N_("Names, addresses, phone numbers, e-mails or other details that identify a private person."),
    "not_appropriate": N_(
        "Not suitable for a helpful assistant: obscene, cruel, dangerous or otherwise out of place."
    ),
    "sexual_content": N_("Describes or alludes to sexual acts, explicitly or implicitly."),
    "moral_judgement": N_("Judges people or their actions as good or bad, right or wrong."),
    "political_content": N_("Takes a side on a political question or promotes a party or ideology."),
}
LIKERT_ENDS = {
    "quality": (N_("Low quality"), N_("High quality")),
    "helpfulness": (N_("Unhelpful"), N_("Helpful")),
    "humor": (N_("Serious"), N_("Humorous")),
    "creativity": (N_("Ordinary"), N_("Creative")),
    "toxicity": (N_("Polite"), N_("Rude")),
    "violence": (N_("Harmless"), N_("Violent")),
}
# the backend's wording of each label (oasst.protocol.common.LABEL_INFO), marked here for the catalogs;
# tests/web/test_i18n.py fails when the backend's wording changes and the catalogs miss it
LABEL_WORDING = (
    N_("Seems to be intentionally low-quality or irrelevant"),
    N_("Fails to follow the correct instruction / task"),
    N_("Wrong Language"),
    N_("The message is written in a language that differs from the currently selected language."),
    N_("Contains personal identifiable information (PII)"),
    N_("Inappropriate"),
    N_("Content is abusive or threatening and expresses prejudice against a protected characteristic"),
    N_(
        "Prejudice refers to preconceived views not based on reason. Protected characteristics include "
        "gender, ethnicity, religion, sexual orientation, and similar characteristics."
    ),
    N_("Contains sexual content"),
    N_("Expresses moral judgement"),
    N_("Expresses political views"),
    N_("Overall subjective quality rating of the message"),
    N_("Rude, abusive, profane or insulting content"),
    N_("Humorous content including sarcasm"),
    N_("Helpfulness of the message"),
    N_("Creativity"),
    N_("Violence/abuse/terrorism/self-harm"),
)


@dataclass
class LabelField:
    """One label as the page shows it: its widget, wording, whether it must be answered, and its value."""

    name: str
    widget: str
    text: str
    help_text: str | None
    mandatory: bool
    value: float | None
    low: str = ""
    high: str = ""

    @property
    def likert_index(self) -> int | None:
        return None if self.value is None else round(self.value * (LIKERT_POINTS - 1))


@dataclass
class TaskState:
    """What the person entered so far (from a posted form, or the defaults of a fresh task)."""

    text: str = ""
    order: list[int] = field(default_factory=list)  # indices into the task's reply order, best first
    not_rankable: bool = False
    labels: dict[str, float] = field(default_factory=dict)
    unchanged_ok: bool = False

    @classmethod
    def initial(cls, task: AnyTask) -> TaskState:
        return cls(order=list(range(len(_replies(task)))))


def _replies(task: AnyTask) -> list[Any]:
    return list(getattr(task, "reply_messages", None) or [])


def _label_descriptions(task: AnyTask) -> list[LabelDescription]:
    labels = getattr(task, "labels", None)
    if labels:
        return list(labels)
    return [describe_label(name) for name in getattr(task, "valid_labels", []) if name in set(TextLabel)]


def label_fields(task: AnyTask, state: TaskState) -> list[LabelField]:
    mandatory = set(getattr(task, "mandatory_labels", None) or [])
    fields = []
    for label in _label_descriptions(task):
        low, high = LIKERT_ENDS.get(label.name, ("", ""))
        question = YES_NO_QUESTIONS.get(label.name) if label.widget == LabelWidget.yes_no else None
        text = _(question or label.display_text)
        if label.name == TextLabel.lang_mismatch:
            text = _("Not in %(language)s") % {"language": language_name(current_lang.get())}
        help_text = label.help_text or FLAG_HELP.get(label.name)
        fields.append(
            LabelField(
                name=label.name,
                widget=label.widget,
                text=text,
                help_text=_(help_text) if help_text else None,
                mandatory=label.name in mandatory,
                value=state.labels.get(label.name),
                low=_(low) if low else "",
                high=_(high) if high else "",
            )
        )
    return fields


# -- reading the posted form --------------------------------------------------------------------------


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _task_from_form(form: FormData, task_id: UUID) -> AnyTask:
    try:
        task = TASK_ADAPTER.validate_json(_field(form, "task_json"))
    except ValidationError as exc:
        raise invalid("This task form is damaged. Reload the page for a new task.") from exc
    if task.id != task_id or isinstance(task, TaskDone):
        raise invalid("This task form is damaged. Reload the page for a new task.")
    return task


def parse_order(raw: str, count: int, *, one_based: bool) -> list[int] | None:
    """``"2,1,3"`` (reply numbers, best first) or ``"1,0,2"`` (indices) as indices; None if not a permutation."""
    parts = [p for p in re.split(r"[\s,;]+", raw.strip()) if p]
    if not all(p.isdigit() for p in parts):
        return None
    order = [int(p) - (1 if one_based else 0) for p in parts]
    return order if sorted(order) == list(range(count)) else None


def _read_state(task: AnyTask, form: FormData) -> tuple[TaskState, WebError | None]:
    """The person's input; an error for input that cannot be right (the page is shown again with it)."""
    state = TaskState(unchanged_ok=_field(form, "unchanged_ok") == "1")
    error: WebError | None = None
    if task.type in CREATE_TYPES:
        state.text = _field(form, "text")
    elif task.type in RANK_TYPES:
        count = len(_replies(task))
        shown = parse_order(_field(form, "ranking"), count, one_based=False)
        state.order = shown if shown is not None else list(range(count))
        typed = _field(form, "typed_order")
        if typed.strip():
            order = parse_order(typed, count, one_based=True)
            if order is None:
                example = ",".join(str(i + 1) for i in reversed(range(count)))
                error = invalid(
                    _("The typed order must name every reply exactly once, e.g. %(example)s.")
                    % {"example": example}
                )
            else:
                state.order = order
        elif shown is None:
            error = invalid(_("The ranking must name every reply exactly once."))
        state.not_rankable = _field(form, "not_rankable") == "1"
    elif task.type in LABEL_TYPES:
        for label in _label_descriptions(task):
            raw = _field(form, f"label.{label.name}")
            if label.widget == LabelWidget.flag:
                state.labels[label.name] = 1.0 if raw == "1" else 0.0
            elif label.widget == LabelWidget.likert and raw in {str(i) for i in range(LIKERT_POINTS)}:
                state.labels[label.name] = int(raw) / (LIKERT_POINTS - 1)
            elif label.widget == LabelWidget.yes_no and raw in ("0", "1"):
                state.labels[label.name] = float(raw)
    return state, error


def _apply_move(order: list[int], move: str) -> list[int]:
    """A no-script up/down button: ``"<reply index>:up"`` or ``"<reply index>:down"``."""
    index, _sep, direction = move.partition(":")
    if not index.isdigit() or int(index) not in order:
        return order
    at = order.index(int(index))
    to = at - 1 if direction == "up" else at + 1
    if 0 <= to < len(order):
        order[at], order[to] = order[to], order[at]
    return order


def _is_unchanged(task: AnyTask, state: TaskState) -> bool:
    if task.type in RANK_TYPES:
        return state.order == list(range(len(_replies(task)))) and not state.not_rankable
    if task.type in LABEL_TYPES:
        flags = {f.name for f in _label_descriptions(task) if f.widget == LabelWidget.flag}
        return all(name in flags and value == 0.0 for name, value in state.labels.items())
    return False


def _check_complete(task: AnyTask, state: TaskState) -> WebError | None:
    if task.type in CREATE_TYPES and not state.text.strip():
        return invalid(_("Please write something before submitting: an empty message cannot be sent."))
    if task.type in LABEL_TYPES:
        missing = [f.text for f in label_fields(task, state) if f.mandatory and f.value is None]
        if missing:
            return invalid(
                _("Please answer these before submitting: %(labels)s") % {"labels": "; ".join(missing)}
            )
    return None


def _interaction(
    task: AnyTask, state: TaskState, account: AccountView, frontend_id: str, reply_id: str
) -> Interaction:
    user = backend_user(account)
    if task.type in CREATE_TYPES:
        return TextReplyToMessage(
            user=user,
            message_id=frontend_id,
            user_message_id=reply_id,
            text=state.text,
            lang=current_lang.get(),
        )
    if task.type in RANK_TYPES:
        return MessageRanking(
            user=user, message_id=frontend_id, ranking=state.order, not_rankable=state.not_rankable
        )
    assert isinstance(task, LabelInitialPromptTask | LabelPrompterReplyTask | LabelAssistantReplyTask)
    labels = {TextLabel(name): value for name, value in state.labels.items()}
    return TextLabels(user=user, message_id=task.message_id, task_id=task.id, labels=labels)


# -- open tasks of this browser session -----------------------------------------------------------


# Entries are "<task id>:<slug of the page that asked for it>", newest last.


def _entry_task_id(entry: str) -> str:
    return entry.partition(":")[0]


def _others(request: Request, task_id: UUID | str) -> list[str]:
    return [e for e in request.session.get("open_tasks", []) if _entry_task_id(e) != str(task_id)]


def _remember(request: Request, task_id: UUID, slug: str) -> None:
    request.session["open_tasks"] = [*_others(request, task_id), f"{task_id}:{slug}"][-MAX_OPEN_TASKS:]


def _forget(request: Request, task_id: UUID | str) -> None:
    request.session["open_tasks"] = _others(request, task_id)


async def _release_open_tasks(request: Request, backend: BackendClient) -> None:
    """Pages left without submit or skip still hold their task; give them back so new ones can come."""
    for entry in request.session.pop("open_tasks", []):
        try:
            await backend.nack_task(
                _entry_task_id(entry), "left unfinished (page closed or reloaded)", release=True
            )
        except OasstApiError:
            continue


async def _held_task(request: Request, backend: BackendClient, kind: TaskKind) -> AnyTask | None:
    """The newest task of this kind that the person still holds (a reloaded page), if it is still open.

    The dispenser never hands anyone two tasks on the same item, so without this a person who reloads
    the page of the last available task would see "no tasks" while holding one.
    """
    for entry in reversed(request.session.get("open_tasks", [])):
        task_id, _, slug = entry.partition(":")
        if slug != kind.slug:
            continue
        try:
            return await backend.get_task(task_id)
        except OasstApiError as exc:
            if not 400 <= exc.status < 500:
                raise
            _forget(request, task_id)  # done, skipped or expired meanwhile (another tab, the backend)
    return None


async def _request_task(
    request: Request, backend: BackendClient, account: AccountView, kind: TaskKind
) -> AnyTask | None:
    user = backend_user(account)
    for attempt in range(2):
        try:
            task = await backend.request_task(user, kind.request_type, lang=current_lang.get())
        except OasstApiError as exc:
            if exc.error_code == ApiErrorCode.TASK_REQUESTED_TYPE_NOT_AVAILABLE:
                return None
            if exc.error_code != ApiErrorCode.TASK_TOO_MANY_PENDING or attempt:
                raise
            await _release_open_tasks(request, backend)
            continue
        return None if isinstance(task, TaskDone) else task
    return None


# -- pages ----------------------------------------------------------------------------------------


def _render_task(
    request: Request,
    account: AccountView,
    kind: TaskKind,
    task: AnyTask,
    state: TaskState,
    *,
    frontend_id: str | None = None,
    reply_id: str | None = None,
    error: WebError | None = None,
    ask_unchanged: bool = False,
    status_code: int = HTTPStatus.OK,
) -> Response:
    replies = _replies(task)
    conversation = list(getattr(getattr(task, "conversation", None), "messages", []) or [])
    guideline = guideline_for(task.type)
    return render(
        request,
        "tasks/task.html",
        status_code=status_code,
        kind=kind,
        shown_kind=BY_SLUG.get(task.type, kind),
        task=task,
        task_json=task.model_dump_json(),
        group=_group(task.type),
        state=state,
        frontend_id=frontend_id or uuid.uuid4().hex,
        reply_id=reply_id or uuid.uuid4().hex,
        conversation=conversation,
        highlight_last=task.type in LABEL_TYPES,
        ordered_replies=[(i, replies[i]) for i in state.order],
        order_example=",".join(
            str(n) for n in ([2, 1, *range(3, len(replies) + 1)] if len(replies) > 1 else [1])
        ),
        reveal_synthetic=bool(getattr(task, "reveal_synthetic", False)),
        labels=label_fields(task, state) if task.type in LABEL_TYPES else [],
        simple_mode=getattr(task, "mode", None) == LabelTaskMode.simple,
        error=error,
        ask_unchanged=ask_unchanged,
        skip_reasons=[(value, _(text)) for value, text in SKIP_REASONS],
        guideline=guideline,
        tutorial=tutorial_visible(request, account),
    )


def _group(task_type: str) -> str:
    if task_type in CREATE_TYPES:
        return "create"
    return "rank" if task_type in RANK_TYPES else "label"


def _kind(slug: str) -> TaskKind:
    kind = BY_SLUG.get(slug)
    if kind is None:
        raise not_found(_("There is no such task type."))
    return kind


@router.get("/tasks/{slug}")
async def task_page(request: Request, slug: str, account: AccountDep, backend: BackendDep) -> Response:
    kind = _kind(slug)
    task = await _request_task(request, backend, account, kind) or await _held_task(request, backend, kind)
    if task is None:
        others = [k for k in TASK_KINDS if k.slug != kind.slug]
        return render(request, "tasks/empty.html", kind=kind, others=others)
    _remember(request, task.id, kind.slug)
    return _render_task(request, account, kind, task, TaskState.initial(task))


@router.post("/tasks/preview")
async def preview(request: Request, _csrf: CsrfDep, account: AccountDep) -> Response:
    """The Markdown preview of the editor, rendered by the one sanitiser the site uses."""
    try:
        body = await request.json()
    except ValueError:
        body = None
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str):
        raise invalid(_('Send the text to preview as {"text": "..."}.'))
    return JSONResponse({"html": render_markdown(text)})


@router.post("/tasks/{task_id}/submit")
async def submit_task(
    request: Request, task_id: UUID, _csrf: CsrfDep, account: AccountDep, backend: BackendDep, store: StoreDep
) -> Response:
    form = await request.form()
    kind = BY_SLUG.get(_field(form, "slug"), BY_SLUG["random"])
    task = _task_from_form(form, task_id)
    frontend_id, reply_id = _field(form, "frontend_id"), _field(form, "reply_id")
    if not (FRONTEND_ID.match(frontend_id) and FRONTEND_ID.match(reply_id)):
        frontend_id, reply_id = uuid.uuid4().hex, uuid.uuid4().hex
    state, error = _read_state(task, form)

    def again(
        error: WebError | None = None, ask_unchanged: bool = False, status: int | None = None
    ) -> Response:
        code = status or (error.status if error else HTTPStatus.OK)
        return _render_task(
            request, account, kind, task, state, frontend_id=frontend_id, reply_id=reply_id,
            error=error, ask_unchanged=ask_unchanged, status_code=code,
        )  # fmt: skip

    move = _field(form, "move")
    if move and task.type in RANK_TYPES and error is None:
        state.order = _apply_move(state.order, move)
        return again()
    error = error or _check_complete(task, state)
    if error is not None:
        return again(error)
    if _is_unchanged(task, state) and not state.unchanged_ok:
        return again(ask_unchanged=True, status=HTTPStatus.CONFLICT)
    try:
        await backend.ack_task(task.id, frontend_id)
        await backend.post_interaction(_interaction(task, state, account, frontend_id, reply_id))
    except OasstApiError as exc:
        if not 400 <= exc.status < 500:
            raise
        return again(WebError(exc.status, f"backend_{int(exc.error_code)}", exc.message))
    _forget(request, task.id)
    await anyio.to_thread.run_sync(store.count_task, account.id)
    return RedirectResponse(f"/tasks/{kind.slug}", status_code=HTTPStatus.SEE_OTHER)


@router.post("/tasks/{task_id}/skip")
async def skip_task(
    request: Request, task_id: UUID, _csrf: CsrfDep, account: AccountDep, backend: BackendDep
) -> Response:
    form = await request.form()
    kind = BY_SLUG.get(_field(form, "slug"), BY_SLUG["random"])
    reasons = dict(SKIP_REASONS)
    chosen = reasons.get(_field(form, "reason"), "")
    detail = _field(form, "reason_text").strip()
    reason = ": ".join(part for part in (chosen, detail) if part)[:1024] or None
    try:
        await backend.nack_task(task_id, reason)
    except OasstApiError as exc:
        if exc.error_code != ApiErrorCode.NOT_FOUND and exc.status != HTTPStatus.NOT_FOUND:
            raise
        raise WebError(
            HTTPStatus.NOT_FOUND,
            WebErrorCode.TASK_EXPIRED,
            _("This task no longer exists."),
            _("Take a new one."),
        ) from exc
    _forget(request, task_id)
    return RedirectResponse(f"/tasks/{kind.slug}", status_code=HTTPStatus.SEE_OTHER)
