"""Wire models shared by every ``/api/v1`` resource: users, messages, labels, emojis, pages.

Field names and shapes follow the original Open Assistant backend so its frontends work unchanged.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

AuthMethod = Literal["discord", "github", "google", "local", "system"]


class User(BaseModel):
    """An end user as the frontend identifies them."""

    id: str = Field(min_length=1, max_length=128)
    display_name: str = Field(max_length=256)
    auth_method: AuthMethod


class FrontEndUser(User):
    user_id: UUID
    enabled: bool
    deleted: bool
    notes: str
    created_date: datetime | None = None
    show_on_leaderboard: bool
    streak_days: int | None = None
    streak_last_day_date: datetime | None = None
    last_activity_date: datetime | None = None
    tos_acceptance_date: datetime | None = None


class CreateFrontendUserRequest(User):
    """Create-or-update of a frontend's user. Unset fields leave an existing user as it is (the original
    defaulted them to ``true``, so every upsert re-enabled banned users and re-showed hidden ones)."""

    show_on_leaderboard: bool | None = None
    enabled: bool | None = None
    tos_acceptance: bool | None = None
    notes: str | None = None


class PageResult(BaseModel):
    prev: str | None = None
    next: str | None = None
    sort_key: str
    order: Literal["asc", "desc"]


class FrontEndUserPage(PageResult):
    items: list[FrontEndUser]


class ConversationMessage(BaseModel):
    id: UUID | None = None
    user_id: UUID | None = None
    frontend_message_id: str | None = None
    text: str
    lang: str | None = None
    is_assistant: bool
    emojis: dict[str, int] | None = None
    user_emojis: list[str] | None = None
    user_is_author: bool | None = None
    synthetic: bool | None = None


class Conversation(BaseModel):
    messages: list[ConversationMessage] = []


class Message(ConversationMessage):
    parent_id: UUID | None = None
    created_date: datetime | None = None
    review_result: bool | None = None
    review_count: int | None = None
    deleted: bool | None = None
    edited: bool | None = None
    model_name: str | None = None
    message_tree_id: UUID | None = None
    ranking_count: int | None = None
    rank: int | None = None
    user: FrontEndUser | None = None


class MessagePage(PageResult):
    items: list[Message]


class MessageTree(BaseModel):
    id: UUID
    messages: list[Message] = []


class MessageRevision(BaseModel):
    id: UUID
    text: str
    message_id: UUID
    user_id: UUID | None = None
    created_date: datetime | None = None
    user_is_author: bool | None = None


class MessageTreeStateResponse(BaseModel):
    message_tree_id: UUID
    state: str
    active: bool
    goal_tree_size: int
    max_depth: int
    max_children_count: int
    lang: str | None = None
    origin: str | None = None
    won_prompt_lottery_date: datetime | None = None


class LabelWidget(enum.StrEnum):
    yes_no = "yes_no"
    flag = "flag"
    likert = "likert"


class TextLabel(enum.StrEnum):
    """Every label a message can get. Values are floats in [0, 1]."""

    spam = "spam"
    fails_task = "fails_task"
    lang_mismatch = "lang_mismatch"
    pii = "pii"
    not_appropriate = "not_appropriate"
    hate_speech = "hate_speech"
    sexual_content = "sexual_content"
    moral_judgement = "moral_judgement"
    political_content = "political_content"
    quality = "quality"
    toxicity = "toxicity"
    humor = "humor"
    helpfulness = "helpfulness"
    creativity = "creativity"
    violence = "violence"


class LabelDescription(BaseModel):
    name: str
    widget: str
    display_text: str
    help_text: str | None = None


# name -> (widget, display text, help text)
LABEL_INFO: dict[TextLabel, tuple[LabelWidget, str, str | None]] = {
    TextLabel.spam: (LabelWidget.yes_no, "Seems to be intentionally low-quality or irrelevant", None),
    TextLabel.fails_task: (LabelWidget.yes_no, "Fails to follow the correct instruction / task", None),
    TextLabel.lang_mismatch: (
        LabelWidget.flag,
        "Wrong Language",
        "The message is written in a language that differs from the currently selected language.",
    ),
    TextLabel.pii: (LabelWidget.flag, "Contains personal identifiable information (PII)", None),
    TextLabel.not_appropriate: (LabelWidget.flag, "Inappropriate", None),
    TextLabel.hate_speech: (
        LabelWidget.flag,
        "Content is abusive or threatening and expresses prejudice against a protected characteristic",
        "Prejudice refers to preconceived views not based on reason. Protected characteristics include "
        "gender, ethnicity, religion, sexual orientation, and similar characteristics.",
    ),
    TextLabel.sexual_content: (LabelWidget.flag, "Contains sexual content", None),
    TextLabel.moral_judgement: (LabelWidget.flag, "Expresses moral judgement", None),
    TextLabel.political_content: (LabelWidget.flag, "Expresses political views", None),
    TextLabel.quality: (LabelWidget.likert, "Overall subjective quality rating of the message", None),
    TextLabel.toxicity: (LabelWidget.likert, "Rude, abusive, profane or insulting content", None),
    TextLabel.humor: (LabelWidget.likert, "Humorous content including sarcasm", None),
    TextLabel.helpfulness: (LabelWidget.likert, "Helpfulness of the message", None),
    TextLabel.creativity: (LabelWidget.likert, "Creativity", None),
    TextLabel.violence: (LabelWidget.likert, "Violence/abuse/terrorism/self-harm", None),
}

REPORT_LABELS = [
    TextLabel.spam,
    TextLabel.not_appropriate,
    TextLabel.pii,
    TextLabel.hate_speech,
    TextLabel.sexual_content,
    TextLabel.moral_judgement,
    TextLabel.political_content,
    TextLabel.toxicity,
    TextLabel.violence,
    TextLabel.quality,
]


def describe_label(name: str) -> LabelDescription:
    widget, display, help_text = LABEL_INFO[TextLabel(name)]
    return LabelDescription(name=name, widget=widget.value, display_text=display, help_text=help_text)


class ValidLabelsResponse(BaseModel):
    valid_labels: list[LabelDescription]


class EmojiCode(enum.StrEnum):
    thumbs_up = "+1"
    thumbs_down = "-1"
    red_flag = "red_flag"
    hundred = "100"
    rofl = "rofl"
    clap = "clap"
    diamond = "diamond"
    heart_eyes = "heart_eyes"
    disappointed = "disappointed"
    poop = "poop"
    skull = "skull"
    skip_reply = "_skip_reply"
    skip_ranking = "_skip_ranking"
    skip_labeling = "_skip_labeling"


class EmojiOp(enum.StrEnum):
    togggle = "toggle"  # sic: the original's member name; the wire value is "toggle"
    add = "add"
    remove = "remove"


class MessageEmojiRequest(BaseModel):
    user: User
    op: EmojiOp = EmojiOp.togggle
    emoji: EmojiCode


class MessageEditRequest(BaseModel):
    user: User
    new_content: str = Field(min_length=1)


class OasstErrorResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"example": {"message": "Task not found", "error_code": 2100}}
    )

    error_code: int
    message: str


class SyntheticReplyRequest(BaseModel):
    """A model's reply to a prompter message of a growing tree, posted by a trusted client (oasst's own
    ``oasst inference synthesize``). It is stored as a synthetic assistant message that volunteers review
    and rank beside human replies."""

    text: str = Field(min_length=1)
    model_name: str = Field(min_length=1, max_length=1024)
    lang: str | None = Field(None, min_length=2, max_length=32, description="Default: the parent's.")


class SyntheticCandidate(BaseModel):
    """A prompter message that may take a synthetic assistant reply, with the conversation up to it."""

    parent_id: UUID
    message_tree_id: UUID
    lang: str
    replies: int  # its replies that count against max_children_count (pending review or accepted)
    conversation: Conversation
