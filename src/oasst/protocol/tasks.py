"""The task protocol: requests, tasks handed out, and the interactions that complete them."""

from __future__ import annotations

import enum
from typing import Annotated, Literal
from uuid import UUID, uuid4

from pydantic import BaseModel, Field, StringConstraints, field_validator

from oasst.protocol.common import Conversation, ConversationMessage, LabelDescription, TextLabel, User


class TaskRequestType(enum.StrEnum):
    random = "random"
    summarize_story = "summarize_story"
    rate_summary = "rate_summary"
    initial_prompt = "initial_prompt"
    prompter_reply = "prompter_reply"
    assistant_reply = "assistant_reply"
    rank_initial_prompts = "rank_initial_prompts"
    rank_prompter_replies = "rank_prompter_replies"
    rank_assistant_replies = "rank_assistant_replies"
    label_initial_prompt = "label_initial_prompt"
    label_assistant_reply = "label_assistant_reply"
    label_prompter_reply = "label_prompter_reply"


class TaskRequest(BaseModel):
    type: TaskRequestType = TaskRequestType.random
    user: User | None = None
    collective: bool = False
    lang: str | None = Field(None, max_length=32)


class TaskAck(BaseModel):
    message_id: str = Field(min_length=1, max_length=200)


class TaskNAck(BaseModel):
    reason: str | None = Field(None, max_length=1024)
    # oasst: give the task back without skipping its item (a page left unfinished): the item stays
    # offered to this user and does not count toward auto-moderation by skips
    release: bool = False


class TaskClose(BaseModel):
    message_id: str = Field(min_length=1, max_length=200)


class Task(BaseModel):
    id: UUID = Field(default_factory=uuid4)
    type: str


class InitialPromptTask(Task):
    type: Literal["initial_prompt"] = "initial_prompt"
    hint: str | None = None


class PrompterReplyTask(Task):
    type: Literal["prompter_reply"] = "prompter_reply"
    conversation: Conversation
    hint: str | None = None


class AssistantReplyTask(Task):
    type: Literal["assistant_reply"] = "assistant_reply"
    conversation: Conversation


class _RankRepliesTask(Task):
    conversation: Conversation
    replies: list[str]  # deprecated: use reply_messages
    reply_messages: list[ConversationMessage]
    message_tree_id: UUID
    ranking_parent_id: UUID
    reveal_synthetic: bool


class RankPrompterRepliesTask(_RankRepliesTask):
    type: Literal["rank_prompter_replies"] = "rank_prompter_replies"


class RankAssistantRepliesTask(_RankRepliesTask):
    type: Literal["rank_assistant_replies"] = "rank_assistant_replies"


class LabelTaskMode(enum.StrEnum):
    simple = "simple"
    full = "full"


class LabelTaskDisposition(enum.StrEnum):
    quality = "quality"
    spam = "spam"


class _LabelTask(Task):
    message_id: UUID
    valid_labels: list[str]
    mandatory_labels: list[str] | None = None
    mode: LabelTaskMode | None = None
    disposition: LabelTaskDisposition | None = None
    labels: list[LabelDescription] | None = None
    conversation: Conversation


class LabelInitialPromptTask(_LabelTask):
    type: Literal["label_initial_prompt"] = "label_initial_prompt"
    prompt: str | None = None  # deprecated: the conversation's only message


class LabelPrompterReplyTask(_LabelTask):
    type: Literal["label_prompter_reply"] = "label_prompter_reply"
    reply: str | None = None  # deprecated: the conversation's last message


class LabelAssistantReplyTask(_LabelTask):
    type: Literal["label_assistant_reply"] = "label_assistant_reply"
    reply: str | None = None  # deprecated: the conversation's last message


class TaskDone(Task):
    type: Literal["task_done"] = "task_done"


AnyTask = Annotated[
    TaskDone
    | InitialPromptTask
    | PrompterReplyTask
    | AssistantReplyTask
    | RankPrompterRepliesTask
    | RankAssistantRepliesTask
    | LabelInitialPromptTask
    | LabelPrompterReplyTask
    | LabelAssistantReplyTask,
    Field(discriminator="type"),
]


class TextReplyToMessage(BaseModel):
    type: Literal["text_reply_to_message"] = "text_reply_to_message"
    user: User
    message_id: str = Field(min_length=1, max_length=200)
    user_message_id: str = Field(min_length=1, max_length=200)
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    lang: str | None = Field(None, max_length=32)


class MessageRating(BaseModel):
    type: Literal["message_rating"] = "message_rating"
    user: User
    message_id: str = Field(min_length=1, max_length=200)
    rating: int = Field(gt=0)


class MessageRanking(BaseModel):
    type: Literal["message_ranking"] = "message_ranking"
    user: User
    message_id: str = Field(min_length=1, max_length=200)
    ranking: list[int] = Field(min_length=1, max_length=64)
    not_rankable: bool | None = None


class TextLabels(BaseModel):
    type: Literal["text_labels"] = "text_labels"
    user: User
    text: str = Field("", max_length=4096)
    labels: dict[TextLabel, float]
    message_id: UUID
    task_id: UUID | None = None
    is_report: bool | None = None

    @field_validator("labels")
    @classmethod
    def _values_in_unit_range(cls, value: dict[TextLabel, float]) -> dict[TextLabel, float]:
        for key, v in value.items():
            if not (0 <= v <= 1):
                raise ValueError(f"Label values must be between 0 and 1, got {v} for {key.value}.")
        return value


AnyInteraction = Annotated[
    TextReplyToMessage | MessageRating | MessageRanking | TextLabels, Field(discriminator="type")
]


class TaskAvailability(BaseModel):
    """Counts per request type; the response body is a plain ``{type: count}`` object."""

    counts: dict[TaskRequestType, int]
