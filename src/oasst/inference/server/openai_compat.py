"""The OpenAI-compatible ``/v1`` API on the same queue and workers as the chat API.

Each ``/v1/chat/completions`` request becomes a hidden chat of its own (no user, ``allow_data_use``
false, owned by the API key): its turns are stored as a straight path of messages and ``n`` pending
assistant messages answer the last user turn. Everything else (queue cap, workers, stop, timeouts,
requeue after a dead worker) is the chat API's machinery, so there is one dispatch path to trust. A choice
ends on the worker's ``answered`` event, without waiting for its hidden row to be stored (nobody reads
it back; if storing fails, the row ends ``failed`` and the caller still has its answer). The
completion id is ``chatcmpl-<first assistant message id>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, insert, update
from sqlalchemy.orm import Session

from oasst.inference.protocol import (
    ChatTurn,
    FinishReason,
    MessageState,
    Role,
    SamplingParameters,
    WorkRequest,
)
from oasst.inference.server.errors import ErrorCode, InferenceError
from oasst.inference.server.events import ANSWERED, FINAL_EVENTS, Event
from oasst.inference.server.ids import new_id
from oasst.inference.server.models import Chat, Message, utcnow
from oasst.inference.server.runtime import Runtime
from oasst.inference.server.streams import KEEP_ALIVE, follow, sse


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    text: str = ""


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content if p.type == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(None, ge=1, le=32768)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    # beyond OpenAI's parameters, the ones vLLM and llama.cpp's server accept (sent as extra body fields)
    top_k: int | None = Field(None, ge=-1, description="0 or -1: no top-k cut.")
    typical_p: float | None = Field(None, gt=0.0, le=1.0)
    repetition_penalty: float | None = Field(None, gt=0.0, le=5.0)
    min_tokens: int | None = Field(None, ge=0, le=32768, description="No end of sequence before this.")
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=8)


ANSWERS = {ANSWERED, "message"}  # events that end a choice with an answer
ENDS = ANSWERS | FINAL_EVENTS


def _finish_reason(value: str | None) -> str:
    return "length" if value == FinishReason.length.value else "stop"


def sampling_for(rt: Runtime, req: ChatCompletionRequest) -> SamplingParameters:
    base = rt.resolve_sampling(req.model, None, None)
    changes: dict[str, Any] = {}
    if req.max_completion_tokens or req.max_tokens:
        changes["max_new_tokens"] = req.max_completion_tokens or req.max_tokens
    if req.temperature is not None:
        changes["temperature"] = req.temperature
        changes["do_sample"] = req.temperature > 0
    if req.top_p is not None:
        changes["top_p"] = req.top_p
    if req.top_k is not None:
        changes["top_k"] = max(req.top_k, 0)
    if req.typical_p is not None:
        changes["typical_p"] = req.typical_p
    if req.repetition_penalty is not None:
        changes["repetition_penalty"] = req.repetition_penalty
    if req.min_tokens is not None:
        changes["min_new_tokens"] = req.min_tokens
    if req.seed is not None:
        changes["seed"] = req.seed
    if req.stop is not None:
        stops = [req.stop] if isinstance(req.stop, str) else req.stop
        if len(stops) > 8:
            raise InferenceError("At most 8 stop sequences.", ErrorCode.REQUEST_VALIDATION_FAILED)
        changes["stop"] = [s for s in stops if s]
    return SamplingParameters.model_validate({**base.model_dump(), **changes})


def conversation_of(req: ChatCompletionRequest) -> list[ChatTurn]:
    """The request's turns as the worker gets them: system and developer messages joined into one
    system turn first, then the user and assistant turns, the last a user's."""
    system = "\n\n".join(m.text() for m in req.messages if m.role in {"system", "developer"})
    turns = [
        ChatTurn(role=Role(m.role), content=m.text()) for m in req.messages if m.role in {"user", "assistant"}
    ]
    if not turns or turns[-1].role != Role.user:
        raise InferenceError("The last message must be a user message.", ErrorCode.INVALID_PARENT)
    return [ChatTurn(role=Role.system, content=system), *turns] if system else turns


def create_api_chat(
    session: Session,
    *,
    key_id: str,
    model: str,
    n: int,
    messages: list[ChatTurn],
    sampling: SamplingParameters,
) -> list[str]:
    """Store a request as a hidden chat: its turns as a straight path, then ``n`` pending replies.
    Core statements (this runs once per /v1 request, so it skips the ORM's unit of work)."""
    system = messages[0].content if messages[0].role == Role.system else None
    now = utcnow()
    chat_id = new_id()
    session.execute(
        insert(Chat).values(
            id=chat_id,
            user_id=None,
            api_key_id=key_id,
            hidden=True,
            allow_data_use=False,
            system_prompt=system,
            deleted=False,
            created_at=now,
            modified_at=now,
        )
    )
    common = {"chat_id": chat_id, "score": 0, "prompt_tokens": 0, "completion_tokens": 0, "created_at": now}
    path: list[dict[str, Any]] = []
    parent: str | None = None
    for turn in messages[1:] if system is not None else messages:
        state = MessageState.manual if turn.role == Role.user else MessageState.complete
        path.append(
            {**common, "id": new_id(), "parent_id": parent, "role": turn.role.value}
            | {"content": turn.content, "state": state.value}
        )
        parent = path[-1]["id"]
    session.execute(insert(Message), path)
    ids = [new_id() for _ in range(n)]
    reply: dict[str, Any] = {**common, "parent_id": parent, "role": Role.assistant.value, "content": ""}
    reply |= {"state": MessageState.pending.value, "model": model, "queued_at": now}
    reply |= {"sampling": sampling.model_dump(mode="json"), "draft_group": ids[0] if n > 1 else None}
    session.execute(insert(Message), [{**reply, "id": i} for i in ids])
    return ids


def _drop_chat_of(session: Session, message_id: str) -> None:
    """Take back a /v1 request's chat whose work the full queue refused."""
    row = session.get(Message, message_id)
    if row is None:
        return
    chat_id = row.chat_id
    session.execute(update(Message).where(Message.chat_id == chat_id).values(parent_id=None))
    session.execute(delete(Message).where(Message.chat_id == chat_id))
    session.execute(delete(Chat).where(Chat.id == chat_id))


async def submit(rt: Runtime, key_id: str, req: ChatCompletionRequest) -> list[str]:
    await rt.check_model(req.model)
    sampling = sampling_for(rt, req)
    messages = conversation_of(req)

    def create(session: Session) -> list[str]:
        return create_api_chat(
            session, key_id=key_id, model=req.model, n=req.n, messages=messages, sampling=sampling
        )

    ids = await rt.db.awrite(create)
    prepared = [WorkRequest(id=i, model=req.model, messages=messages, sampling=sampling) for i in ids]
    await rt.prepared.put(prepared, ttl_s=rt.settings.queue_wait_timeout_s + 60)
    if not await rt.queue.push(req.model, ids, max_size=rt.settings.queue_max_size):
        await rt.prepared.drop(ids)
        await rt.db.awrite(lambda s: _drop_chat_of(s, ids[0]))
        raise rt.queue_full(req.model)
    return ids


async def _stop_unfinished(rt: Runtime, model: str, ids: list[str], done: set[str]) -> None:
    with anyio.CancelScope(shield=True):
        for message_id in ids:
            if message_id not in done:
                await rt.stop(message_id, model)


def _raise_for(finals: list[Event]) -> None:
    """Answer a choice that ended in an error as the request's error (a stopped one is an answer)."""
    for event in finals:
        if event.get("event_type") != "error":
            continue
        code, text = str(event.get("error", "")), str(event.get("message", ""))
        if code == "timeout":
            raise InferenceError(
                text or "Timed out.", ErrorCode.GENERATION_TIMEOUT, HTTPStatus.GATEWAY_TIMEOUT
            )
        raise InferenceError(
            text or "Generation failed.", ErrorCode.GENERATION_FAILED, HTTPStatus.BAD_GATEWAY
        )


def _answer(event: Event) -> dict[str, Any]:
    """A choice's ending ``answered`` or ``message`` event as the fields they share: content,
    finish_reason, prompt_tokens, completion_tokens."""
    return dict(event["message"]) if event.get("event_type") == "message" else event


def _usage(finals: list[Event]) -> dict[str, int]:
    """Token counts from the choices' ending events (the worker's counts)."""
    answers = [_answer(event) for event in finals if event.get("event_type") in ANSWERS]
    prompt = max((int(a.get("prompt_tokens", 0)) for a in answers), default=0)
    completion = sum(int(a.get("completion_tokens", 0)) for a in answers)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def complete(rt: Runtime, req: ChatCompletionRequest, ids: list[str]) -> dict[str, Any]:
    """Wait for every choice, then answer in OpenAI's ``chat.completion`` shape."""
    finals: list[Event] = []
    try:
        for message_id in ids:
            async with contextlib.aclosing(follow(rt, message_id, req.model, pending=False)) as events:
                async for event in events:
                    if event.get("event_type") in ENDS:
                        finals.append(event)
                        break
    finally:
        if len(finals) < len(ids):
            await _stop_unfinished(rt, req.model, ids, set(ids[: len(finals)]))
    _raise_for(finals)
    return {
        "id": f"chatcmpl-{ids[0]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": _answer(event)["content"]},
                "finish_reason": _finish_reason(_answer(event).get("finish_reason")),
                "logprobs": None,
            }
            for i, event in enumerate(finals)
        ],
        "usage": _usage(finals),
    }


def openai_error(message: str, code: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


async def stream(rt: Runtime, req: ChatCompletionRequest, ids: list[str]) -> AsyncIterator[str]:
    """``chat.completion.chunk`` events for every choice, then usage (if asked) and ``[DONE]``."""
    completion_id, created = f"chatcmpl-{ids[0]}", int(time.time())

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": req.model,
            "choices": choices,
            **extra,
        }
        return sse(body)

    merged: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()

    async def pump(index: int, message_id: str) -> None:
        async for event in follow(rt, message_id, req.model, pending=False):
            await merged.put((index, event))

    done: set[str] = set()
    finals: list[Event] = []
    tasks = [asyncio.create_task(pump(i, m)) for i, m in enumerate(ids)]
    try:
        for i in range(len(ids)):
            delta = {"role": "assistant", "content": ""}
            yield chunk([{"index": i, "delta": delta, "finish_reason": None, "logprobs": None}])
        while len(done) < len(ids):
            index, event = await merged.get()
            kind = event.get("event_type")
            if event is KEEP_ALIVE:
                yield ": keep-alive\n\n"
            elif kind == "token":
                choice = {"index": index, "delta": {"content": event["text"]}, "finish_reason": None}
                yield chunk([choice])
            elif kind in ANSWERS and ids[index] not in done:
                done.add(ids[index])
                finals.append(event)
                reason = _finish_reason(_answer(event).get("finish_reason"))
                yield chunk([{"index": index, "delta": {}, "finish_reason": reason, "logprobs": None}])
            elif kind == "error":
                done.add(ids[index])
                code = str(event.get("error", "error"))
                yield sse(openai_error(str(event.get("message", "")), code, "server_error"))
                return
        if req.stream_options and req.stream_options.include_usage:
            yield chunk([], usage=_usage(finals))
        yield "data: [DONE]\n\n"
    finally:
        # shielded: this also runs when the client went away and this task is being cancelled
        with anyio.CancelScope(shield=True):
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if len(done) < len(ids):
                await _stop_unfinished(rt, req.model, ids, done)
