"""Wire models shared by the inference server, its workers and its clients.

Three conversations use them:

* **Worker websocket** (``/workers/ws``): the worker connects with ``Authorization: Bearer <worker key>``
  and ``X-Protocol-Version``, sends :class:`WorkerHello`, then receives :class:`WorkRequest` /
  :class:`CancelWork` / :class:`Pong` and sends :class:`TokenEvent` / :class:`DoneEvent` /
  :class:`ErrorEvent` / :class:`Ping`. The server hands a worker work only while it has a free slot
  (``max_parallel``), so work waits in the queue, never on a busy worker.
* **Chat API** (``/chats``): chats whose messages form a tree; assistant messages move through
  :class:`MessageState`.
* **Message stream** (``GET /chats/{chat}/messages/{message}/events``, server-sent events): ``pending``
  (queue position) → ``token`` … → ``message`` (final) or ``error``.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field


def _no_nul(value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        raise ValueError("NUL characters are not allowed in text")
    return value


# text a person sends: NUL characters are refused with 422 (PostgreSQL cannot store them)
UserText = Annotated[str, AfterValidator(_no_nul)]
OptionalUserText = Annotated[str | None, AfterValidator(_no_nul)]

PROTOCOL_VERSION = 1
PROTOCOL_HEADER = "X-Protocol-Version"


class Role(enum.StrEnum):
    system = "system"
    user = "user"
    assistant = "assistant"


class ChatTurn(BaseModel):
    """One turn as the model sees it (OpenAI style; the prompt format is applied by the engine)."""

    role: Role
    content: str


class MessageState(enum.StrEnum):
    manual = "manual"  # written by a person (user messages)
    pending = "pending"  # waiting in the queue
    in_progress = "in_progress"  # a worker is generating it
    complete = "complete"
    cancelled = "cancelled"  # stopped by the user (the text so far is kept)
    timeout = "timeout"  # waited or ran longer than the limits
    failed = "failed"  # the worker or the engine failed


FINAL_STATES = frozenset(
    {MessageState.complete, MessageState.cancelled, MessageState.timeout, MessageState.failed}
)


class SamplingParameters(BaseModel):
    max_new_tokens: int = Field(256, ge=1, le=32768)
    # end of sequence and the role markers cannot end the answer before this many tokens (stop strings
    # and max_new_tokens still can): vLLM's min_tokens, transformers' min_new_tokens
    min_new_tokens: int = Field(0, ge=0, le=32768)
    temperature: float = Field(0.8, ge=0.0, le=5.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(50, ge=0)
    typical_p: float = Field(1.0, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.1, gt=0.0, le=5.0)
    do_sample: bool = True
    seed: int | None = None
    stop: list[str] = Field(default_factory=list, max_length=8)


class FinishReason(enum.StrEnum):
    stop = "stop"  # end of sequence or a stop string
    length = "length"  # max_new_tokens reached
    cancelled = "cancelled"


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# -- worker websocket ------------------------------------------------------------------------------


class WorkerHello(BaseModel):
    type: Literal["hello"] = "hello"
    protocol_version: int = PROTOCOL_VERSION
    model: str = Field(min_length=1, max_length=256, description="The model name clients ask for.")
    max_parallel: int = Field(1, ge=1, le=1024, description="Requests the worker runs at once.")
    context_length: int = Field(2048, ge=16)
    engine: str = Field("", max_length=64, description="transformers, openai-upstream, ...")
    name: str = Field("", max_length=128, description="A label for logs; the worker key identifies it.")


class WorkRequest(BaseModel):
    type: Literal["work"] = "work"
    id: str  # the assistant message id (also the OpenAI completion id)
    model: str
    messages: list[ChatTurn]  # system prompt first when there is one; ends with a user turn
    sampling: SamplingParameters
    deadline_s: float | None = Field(None, description="Seconds the worker may spend generating.")


class CancelWork(BaseModel):
    type: Literal["cancel"] = "cancel"
    id: str


class Pong(BaseModel):
    type: Literal["pong"] = "pong"


class Refused(BaseModel):
    """Sent before the server closes a connection it will not serve (bad key, old protocol)."""

    type: Literal["refused"] = "refused"
    code: str
    message: str


class TokenEvent(BaseModel):
    type: Literal["token"] = "token"
    id: str
    text: str


class DoneEvent(BaseModel):
    type: Literal["done"] = "done"
    id: str
    text: str
    finish_reason: FinishReason = FinishReason.stop
    usage: Usage = Field(default_factory=Usage)


class ErrorEvent(BaseModel):
    type: Literal["error"] = "error"
    id: str
    message: str


class Ping(BaseModel):
    type: Literal["ping"] = "ping"


ServerToWorker = Annotated[WorkRequest | CancelWork | Pong | Refused, Field(discriminator="type")]
WorkerToServer = Annotated[
    WorkerHello | TokenEvent | DoneEvent | ErrorEvent | Ping, Field(discriminator="type")
]


# -- message stream (server-sent events) --------------------------------------------------------------


class PendingStreamEvent(BaseModel):
    event_type: Literal["pending"] = "pending"
    queue_position: int
    queue_size: int


class TokenStreamEvent(BaseModel):
    event_type: Literal["token"] = "token"
    text: str


class MessageStreamEvent(BaseModel):
    event_type: Literal["message"] = "message"
    message: MessageRead


class ErrorStreamEvent(BaseModel):
    event_type: Literal["error"] = "error"
    error: str  # a stable code: worker_failed, timeout, cancelled, engine_error
    message: str


StreamEvent = Annotated[
    PendingStreamEvent | TokenStreamEvent | MessageStreamEvent | ErrorStreamEvent,
    Field(discriminator="event_type"),
]


# -- chat API -------------------------------------------------------------------------------------------


class MessageRead(BaseModel):
    id: str
    chat_id: str
    parent_id: str | None
    role: Role
    content: str
    state: MessageState
    model: str | None = None
    sampling: SamplingParameters | None = None
    error: str | None = None
    score: int = 0  # the user's vote: -1, 0, +1
    draft_group: str | None = None  # drafts generated together share a group
    selected: bool | None = None  # drafts: True for the one the user picked, False for the others
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0  # assistant messages: the prompt's tokens as the worker counted them
    completion_tokens: int = 0  # assistant messages: tokens generated
    created_at: datetime
    finished_at: datetime | None = None


class ChatRead(BaseModel):
    id: str
    title: str | None
    hidden: bool
    allow_data_use: bool
    system_prompt: str | None = None
    custom_instructions: str | None = None  # about the user / how to answer; added to the system turn
    created_at: datetime
    modified_at: datetime


class ChatWithMessages(ChatRead):
    messages: list[MessageRead]


class ChatPage(BaseModel):
    items: list[ChatRead]
    next: str | None = None  # cursor for the next (older) page


class CreateChat(BaseModel):
    title: OptionalUserText = Field(None, max_length=200)
    system_prompt: OptionalUserText = Field(None, max_length=8000)
    custom_instructions: OptionalUserText = Field(None, max_length=2000)
    allow_data_use: bool = True


class UpdateChat(BaseModel):
    title: OptionalUserText = Field(None, max_length=200)
    hidden: bool | None = None
    allow_data_use: bool | None = None
    system_prompt: OptionalUserText = Field(None, max_length=8000)
    custom_instructions: OptionalUserText = Field(None, max_length=2000)


class CreateUserMessage(BaseModel):
    parent_id: str | None = Field(None, description="The assistant message answered; None starts the chat.")
    content: UserText = Field(min_length=1, max_length=32000)


class CreateAssistantMessage(BaseModel):
    parent_id: str = Field(description="The user message to answer (regenerate = another reply to it).")
    model: str | None = Field(None, description="Model name; default: the server's default model.")
    preset: str | None = Field(None, description="A sampling preset of the model; default: its first.")
    sampling: SamplingParameters | None = Field(None, description="Custom sampling; overrides the preset.")
    drafts: int = Field(1, ge=1, le=8, description="Alternatives generated at once (the user picks one).")


class AssistantMessages(BaseModel):
    messages: list[MessageRead]  # one per draft, all pending


class Vote(BaseModel):
    score: Literal[-1, 0, 1]


class ReportType(enum.StrEnum):
    spam = "spam"
    offensive = "offensive"
    feedback = "feedback"


class CreateReport(BaseModel):
    report_type: ReportType
    reason: UserText = Field("", max_length=2000)


class DraftPick(BaseModel):
    """The draft the user chose; the other drafts of its group become its inferior alternatives."""

    selected_id: str


class ModelPreset(BaseModel):
    name: str
    sampling: SamplingParameters


class ModelInfo(BaseModel):
    name: str
    presets: list[ModelPreset]
    workers: int  # connected workers serving it
    context_length: int


MessageStreamEvent.model_rebuild()
