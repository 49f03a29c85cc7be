"""Chat with the model: the chat list (search, new chat), one chat's active thread with its branches, the
replies streaming in, and what a person does with them (stop, regenerate, edit, drafts, votes, reports,
rename, hide, delete, data use, export).

The browser talks only to the website. Every call to the inference server carries a short-lived token
minted here for the signed-in person (``<auth_method>:<id>``, the same identity the backend knows); the
reply's server-sent events are proxied through ``/chat/{id}/messages/{mid}/events``. Without
``inference_url`` every page here is a 404.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from oasst.client import InferenceClient, InferenceErrorCode, OasstApiError
from oasst.inference.protocol import (
    FINAL_STATES,
    ChatRead,
    CreateChat,
    ErrorStreamEvent,
    MessageRead,
    MessageState,
    ModelInfo,
    ReportType,
    Role,
    SamplingParameters,
    UpdateChat,
)
from oasst.inference.tokens import mint_user_token
from oasst.web.chat_thread import active_thread, unpicked_drafts
from oasst.web.deps import AccountDep, CsrfDep, SettingsDep
from oasst.web.errors import WebError, invalid, not_found
from oasst.web.i18n import gettext as _
from oasst.web.templating import render

TOKEN_TTL_S = 300  # a token lives for one page or one stream; the proxy only needs it to open the stream
MAX_DRAFTS = 3
MAX_MESSAGE_CHARS = 32000
REPLYABLE = {MessageState.complete, MessageState.cancelled}
PREFS_KEY = "chat_prefs"


def chat_enabled(request: Request, settings: SettingsDep) -> None:
    if not settings.inference_url or getattr(request.app.state, "inference", None) is None:
        raise not_found(_("This page does not exist."))


router = APIRouter(prefix="/chat", dependencies=[Depends(chat_enabled)])


@dataclass(frozen=True)
class ChatApi:
    """The inference client and this request's token for the signed-in person."""

    client: InferenceClient
    token: str


def chat_api(request: Request, account: AccountDep, settings: SettingsDep) -> ChatApi:
    who = account.backend
    secret = settings.inference_user_token_secret.get_secret_value()
    token = mint_user_token(secret, f"{who.auth_method}:{who.id}", account.display_name, ttl=TOKEN_TTL_S)
    client: InferenceClient = request.app.state.inference
    return ChatApi(client, token)


ChatDep = Annotated[ChatApi, Depends(chat_api)]


def chat_error(exc: OasstApiError) -> WebError:
    """An inference error as the website shows it (``inference_<code>``); a missing chat is a plain 404."""
    if exc.error_code in {InferenceErrorCode.CHAT_NOT_FOUND, InferenceErrorCode.MESSAGE_NOT_FOUND}:
        return not_found(_("There is no such chat."))
    if exc.status == 0:
        return WebError(
            503,
            "inference_unavailable",
            _("The chat service is not reachable right now."),
            _("Try again soon."),
        )
    status = exc.status if 400 <= exc.status < 600 else 502
    return WebError(status, f"inference_{int(exc.error_code)}", exc.message)


def _streaming(message: MessageRead) -> bool:
    return message.role == Role.assistant and message.state not in FINAL_STATES


# -- preferences of the composer (model, preset, drafts, custom sampling) ---------------------------


@dataclass
class Prefs:
    model: str = ""
    preset: str = ""
    drafts: int = 1
    temperature: float | None = None
    max_new_tokens: int | None = None

    @classmethod
    def of(cls, request: Request) -> Prefs:
        raw = request.session.get(PREFS_KEY) or {}
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})

    def save(self, request: Request) -> None:
        request.session[PREFS_KEY] = self.__dict__.copy()


def _prefs_from_form(
    request: Request, model: str, preset: str, drafts: int, temperature: str, max_new_tokens: str
) -> Prefs:
    if not 1 <= drafts <= MAX_DRAFTS:
        raise invalid(_("Choose 1 to %(n)s drafts.") % {"n": MAX_DRAFTS})
    try:
        temp = float(temperature) if temperature.strip() else None
        tokens = int(max_new_tokens) if max_new_tokens.strip() else None
    except ValueError:
        raise invalid(_("Temperature and length must be numbers.")) from None
    if temp is not None and not 0 <= temp <= 2:
        raise invalid(_("The temperature goes from 0 to 2."))
    if tokens is not None and not 1 <= tokens <= 4096:
        raise invalid(_("The reply length goes from 1 to 4096 tokens."))
    prefs = Prefs(model.strip(), preset.strip(), drafts, temp, tokens)
    prefs.save(request)
    return prefs


async def _ask(api: ChatApi, chat_id: str, parent_id: str, prefs: Prefs) -> list[MessageRead]:
    """Request the assistant's reply (or drafts) to a user message with the person's choices."""
    sampling = None
    if prefs.temperature is not None or prefs.max_new_tokens is not None:
        base = await _preset_sampling(api, prefs)
        changes: dict[str, Any] = {}
        if prefs.temperature is not None:
            changes.update(temperature=prefs.temperature, do_sample=prefs.temperature > 0)
        if prefs.max_new_tokens is not None:
            changes["max_new_tokens"] = prefs.max_new_tokens
        sampling = base.model_copy(update=changes)
    return await api.client.request_assistant_messages(
        chat_id,
        parent_id,
        as_user=api.token,
        model=prefs.model or None,
        preset=prefs.preset or None,
        sampling=sampling,
        drafts=prefs.drafts,
    )


async def _preset_sampling(api: ChatApi, prefs: Prefs) -> SamplingParameters:
    models = await api.client.list_models(as_user=api.token)
    model = next((m for m in models if m.name == prefs.model), models[0] if models else None)
    presets = model.presets if model else []
    chosen = next((p for p in presets if p.name == prefs.preset), presets[0] if presets else None)
    return chosen.sampling.model_copy() if chosen else SamplingParameters()


# -- pages ---------------------------------------------------------------------------------------


FormText = Annotated[str, Form()]
Drafts = Annotated[int, Form()]


def _back(chat_id: str, at: str | None = None, **flags: str) -> RedirectResponse:
    params = {"at": at, **flags} if at else flags
    suffix = f"?{urlencode(params)}" if params else ""
    return RedirectResponse(f"/chat/{chat_id}{suffix}", status_code=303)


async def _choices(api: ChatApi, request: Request) -> dict[str, Any]:
    """What the reply settings offer: the models, every preset name (each model's first), and the
    person's last choices."""
    try:
        models: list[ModelInfo] = await api.client.list_models(as_user=api.token)
    except OasstApiError as exc:
        raise chat_error(exc) from exc
    presets = list(dict.fromkeys(p.name for m in models for p in m.presets))
    return {"models": models, "presets": presets, "prefs": Prefs.of(request), "max_drafts": MAX_DRAFTS}


@router.get("")
async def chat_index(
    request: Request, api: ChatDep, q: str = "", cursor: str | None = None, hidden: bool = False
) -> Response:
    """The person's chats (newest first, paged), a search box, and the new-chat form."""
    try:
        if q.strip():
            page = await api.client.search_chats(q.strip()[:200], as_user=api.token, cursor=cursor)
        else:
            page = await api.client.list_chats(as_user=api.token, include_hidden=hidden, cursor=cursor)
    except OasstApiError as exc:
        raise chat_error(exc) from exc
    more = urlencode(
        {k: v for k, v in {"q": q, "hidden": "true" if hidden else "", "cursor": page.next}.items() if v}
    )
    return render(
        request,
        "chat/index.html",
        chats=page.items,
        next_url=f"/chat?{more}" if page.next else None,
        q=q,
        hidden=hidden,
        **await _choices(api, request),
    )


@router.post("")
async def create_chat(
    request: Request,
    api: ChatDep,
    _csrf: CsrfDep,
    content: FormText = "",
    system_prompt: FormText = "",
    custom_instructions: FormText = "",
    allow_data_use: FormText = "",
    model: FormText = "",
    preset: FormText = "",
    drafts: Drafts = 1,
    temperature: FormText = "",
    max_new_tokens: FormText = "",
) -> Response:
    """Start a chat; with a first message, ask for the reply at once."""
    prefs = _prefs_from_form(request, model, preset, drafts, temperature, max_new_tokens)
    body = CreateChat(
        system_prompt=system_prompt.strip()[:8000] or None,
        custom_instructions=custom_instructions.strip()[:2000] or None,
        allow_data_use=bool(allow_data_use),
    )
    try:
        chat = await api.client.create_chat(body, as_user=api.token)
        if not content.strip():
            return _back(chat.id)
        question = await api.client.post_user_message(chat.id, _text(content), as_user=api.token)
        await _ask(api, chat.id, question.id, prefs)
    except OasstApiError as exc:
        raise chat_error(exc) from exc
    return _back(chat.id, question.id)


def _text(content: str) -> str:
    text = content.strip()
    if not text:
        raise invalid(_("Write a message first."))
    if len(text) > MAX_MESSAGE_CHARS:
        raise invalid(_("A message holds at most %(n)s characters.") % {"n": MAX_MESSAGE_CHARS})
    return text


@router.get("/{chat_id}")
async def chat_page(
    request: Request, chat_id: str, api: ChatDep, at: str | None = None, sent: str = ""
) -> Response:
    """The chat's active thread, with ``‹ i/n ›`` at every branch point, the composer and the chat's actions."""
    try:
        chat = await api.client.get_chat(chat_id, as_user=api.token)
    except OasstApiError as exc:
        raise chat_error(exc) from exc
    turns = active_thread(chat.messages, at)
    last = turns[-1] if turns else None
    reply_to = last.message if last and last.message.role == Role.assistant and not last.drafts else None
    return render(
        request,
        "chat/chat.html",
        chat=ChatRead.model_validate(chat.model_dump(exclude={"messages"})),
        turns=turns,
        last=last,
        reply_to=reply_to,
        can_reply=reply_to is not None and reply_to.state in REPLYABLE,
        **await _choices(api, request),
        report_types=list(ReportType),
        sent=sent,
        streaming=_streaming,
    )


@router.post("/{chat_id}/messages")
async def post_message(
    request: Request,
    chat_id: str,
    api: ChatDep,
    _csrf: CsrfDep,
    content: FormText,
    parent_id: FormText = "",
    model: FormText = "",
    preset: FormText = "",
    drafts: Drafts = 1,
    temperature: FormText = "",
    max_new_tokens: FormText = "",
) -> Response:
    """The composer: the person's message, then the assistant's reply (it streams in on the chat page)."""
    prefs = _prefs_from_form(request, model, preset, drafts, temperature, max_new_tokens)
    try:
        question = await api.client.post_user_message(
            chat_id, _text(content), parent_id or None, as_user=api.token
        )
        await _ask(api, chat_id, question.id, prefs)
    except OasstApiError as exc:
        raise chat_error(exc) from exc
    return _back(chat_id, question.id)


@router.post("/{chat_id}/messages/{message_id}/regenerate")
async def regenerate(
    request: Request, chat_id: str, message_id: str, api: ChatDep, _csrf: CsrfDep
) -> Response:
    """Another reply to the user message ``message_id`` (a new sibling of its replies), with the model,
    preset and drafts last chosen in the composer."""
    try:
        replies = await _ask(api, chat_id, message_id, Prefs.of(request))
    except OasstApiError as exc:
        raise chat_error(exc) from exc
    return _back(chat_id, replies[0].id)


@router.post("/{chat_id}/messages/{message_id}/edit")
async def edit(
    request: Request, chat_id: str, message_id: str, api: ChatDep, _csrf: CsrfDep, content: FormText
) -> Response:
    """An edited user message is a new branch: a sibling of ``message_id``, answered afresh."""
    prefs = Prefs.of(request)
    try:
        original = await api.client.get_message(chat_id, message_id, as_user=api.token)
        if original.role != Role.user:
            raise invalid(_("Only your own messages can be edited."))
        edited = await api.client.post_user_message(
            chat_id, _text(content), original.parent_id, as_user=api.token
        )
        await _ask(api, chat_id, edited.id, prefs)
    except OasstApiError as exc:
        raise chat_error(exc) from exc
    return _back(chat_id, edited.id)


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


@router.post("/{chat_id}/messages/{message_id}/stop")
async def stop(request: Request, chat_id: str, message_id: str, api: ChatDep, _csrf: CsrfDep) -> Response:
    try:
        message = await api.client.stop_message(chat_id, message_id, as_user=api.token)
    except OasstApiError as exc:
        raise chat_error(exc) from exc
    if _wants_json(request):
        return Response(message.model_dump_json(), media_type="application/json")
    return _back(chat_id, message_id)


@router.post("/{chat_id}/messages/{message_id}/vote")
async def vote(
    request: Request,
    chat_id: str,
    message_id: str,
    api: ChatDep,
    _csrf: CsrfDep,
    score: Annotated[int, Form()],
) -> Response:
    if score not in (-1, 0, 1):
        raise invalid(_("A vote is -1, 0 or 1."))
    try:
        message = await api.client.vote(chat_id, message_id, score, as_user=api.token)  # type: ignore[arg-type]
    except OasstApiError as exc:
        raise chat_error(exc) from exc
    if _wants_json(request):
        return Response(message.model_dump_json(), media_type="application/json")
    return _back(chat_id, message_id)


@router.post("/{chat_id}/messages/{message_id}/report")
async def report(
    chat_id: str,
    message_id: str,
    api: ChatDep,
    _csrf: CsrfDep,
    report_type: FormText,
    reason: FormText = "",
) -> Response:
    if report_type not in set(ReportType):
        raise invalid(_("Choose what kind of report this is."))
    try:
        await api.client.report(chat_id, message_id, report_type, reason.strip()[:2000], as_user=api.token)
    except OasstApiError as exc:
        raise chat_error(exc) from exc
    return _back(chat_id, message_id, sent="report")


@router.post("/{chat_id}/draft-picks")
async def pick_draft(chat_id: str, api: ChatDep, _csrf: CsrfDep, selected_id: FormText) -> Response:
    """ "Use this one": the picked draft continues the thread; the others are recorded as not chosen."""
    try:
        await api.client.pick_draft(chat_id, selected_id, as_user=api.token)
    except OasstApiError as exc:
        raise chat_error(exc) from exc
    return _back(chat_id, selected_id)


@router.get("/{chat_id}/messages/{message_id}/events")
async def events(chat_id: str, message_id: str, api: ChatDep) -> Response:
    """The reply's server-sent events, proxied from the inference server (which the browser never sees)."""
    try:
        message = await api.client.get_message(chat_id, message_id, as_user=api.token)
    except OasstApiError as exc:
        raise chat_error(exc) from exc
    if message.role != Role.assistant:
        raise not_found(_("There is no such reply."))
    return StreamingResponse(
        _proxy(api, chat_id, message_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _proxy(api: ChatApi, chat_id: str, message_id: str) -> AsyncIterator[str]:
    try:
        async for event in api.client.stream_events(chat_id, message_id, as_user=api.token):
            yield f"data: {event.model_dump_json()}\n\n"
    except OasstApiError as exc:
        failed = ErrorStreamEvent(error="unavailable", message=exc.message)
        yield f"data: {failed.model_dump_json()}\n\n"


@router.get("/{chat_id}/messages/{message_id}/fragment")
async def fragment(request: Request, chat_id: str, message_id: str, api: ChatDep) -> Response:
    """A message's body and actions as HTML (Markdown rendered here), to replace a streamed reply."""
    try:
        chat = await api.client.get_chat(chat_id, as_user=api.token)
    except OasstApiError as exc:
        raise chat_error(exc) from exc
    message = next((m for m in chat.messages if m.id == message_id), None)
    if message is None:
        raise not_found(_("There is no such message."))
    siblings = [m for m in chat.messages if m.parent_id == message.parent_id]
    return render(
        request,
        "chat/_fragment.html",
        chat=chat,
        message=message,
        draft=bool(unpicked_drafts(message, siblings)),
        report_types=list(ReportType),
        streaming=_streaming,
    )


# -- chat actions ----------------------------------------------------------------------------------


async def _update(api: ChatApi, chat_id: str, changes: UpdateChat) -> ChatRead:
    try:
        return await api.client.update_chat(chat_id, changes, as_user=api.token)
    except OasstApiError as exc:
        raise chat_error(exc) from exc


@router.post("/{chat_id}/rename")
async def rename(chat_id: str, api: ChatDep, _csrf: CsrfDep, title: FormText = "") -> Response:
    await _update(api, chat_id, UpdateChat(title=title.strip()[:200] or None))
    return _back(chat_id)


@router.post("/{chat_id}/hide")
async def hide(chat_id: str, api: ChatDep, _csrf: CsrfDep, hidden: FormText = "1") -> Response:
    await _update(api, chat_id, UpdateChat(hidden=hidden == "1"))
    return RedirectResponse("/chat" if hidden == "1" else f"/chat/{chat_id}", status_code=303)


@router.post("/{chat_id}/data-use")
async def data_use(chat_id: str, api: ChatDep, _csrf: CsrfDep, allow: FormText = "") -> Response:
    await _update(api, chat_id, UpdateChat(allow_data_use=allow == "1"))
    return _back(chat_id)


@router.post("/{chat_id}/system-prompt")
async def system_prompt(chat_id: str, api: ChatDep, _csrf: CsrfDep, system_prompt: FormText = "") -> Response:
    await _update(api, chat_id, UpdateChat(system_prompt=system_prompt.strip()[:8000] or None))
    return _back(chat_id)


@router.post("/{chat_id}/delete")
async def delete(chat_id: str, api: ChatDep, _csrf: CsrfDep) -> Response:
    try:
        await api.client.delete_chat(chat_id, as_user=api.token)
    except OasstApiError as exc:
        raise chat_error(exc) from exc
    return RedirectResponse("/chat", status_code=303)


@router.get("/{chat_id}/export")
async def export(chat_id: str, api: ChatDep, format: Literal["md", "json"] = "md") -> Response:
    """The whole chat tree as a Markdown or JSON download."""
    try:
        exported = await api.client.export_chat(chat_id, format, as_user=api.token)
    except OasstApiError as exc:
        raise chat_error(exc) from exc
    disposition = f'attachment; filename="{exported.filename}"'
    return Response(
        exported.content, media_type=exported.media_type, headers={"Content-Disposition": disposition}
    )
