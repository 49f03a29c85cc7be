"""Pydantic models of the public oasst1 / oasst2 export format.

These mirror the JSON objects of the released datasets field for field, in the same order, so that a
file read and written back is unchanged. Nodes and trees allow extra fields: later releases and
post-processing add fields (oasst2's `CRITERIA`, future ones) that this code does not know, and an
import followed by an export must carry them through untouched rather than drop or reject them.

Ids are plain strings, not UUIDs: anonymised exports replace them with sha256 hex digests.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_serializer, field_validator

__all__ = [
    "DetoxifyRating",
    "ExportMessageEvent",
    "ExportMessageEventEmoji",
    "ExportMessageEventOther",
    "ExportMessageEventRanking",
    "ExportMessageEventRating",
    "ExportMessageEventReport",
    "ExportMessageEventScore",
    "ExportMessageNode",
    "ExportMessageTree",
    "LabelAvgValue",
    "LabelValues",
    "Role",
]

Role = Literal["prompter", "assistant"]

_OPEN = ConfigDict(extra="allow")


class LabelAvgValue(BaseModel):
    """The mean of one label over every review of a message, and how many reviews gave it."""

    model_config = _OPEN

    value: float
    count: int


LabelValues = dict[str, LabelAvgValue]


class DetoxifyRating(BaseModel):
    """Scores of the `detoxify` classifier, added to the HF releases after export."""

    model_config = _OPEN

    toxicity: float
    severe_toxicity: float
    obscene: float
    identity_attack: float
    insult: float
    threat: float
    sexual_explicit: float


class ExportMessageEventEmoji(BaseModel):
    """A user's emoji on a message (including the `_skip_*` codes of skipped tasks)."""

    model_config = _OPEN

    type: Literal["emoji"] = "emoji"
    user_id: str | None = None
    emoji: str


class ExportMessageEventRating(BaseModel):
    """A rating reaction; defined by the format, not produced by the original export."""

    model_config = _OPEN

    type: Literal["rating"] = "rating"
    user_id: str | None = None
    rating: str


class ExportMessageEventRanking(BaseModel):
    """One user's ballot over the replies of the message it is attached to (the parent)."""

    model_config = _OPEN

    type: Literal["ranking"] = "ranking"
    user_id: str | None = None
    ranking: list[int]
    ranked_message_ids: list[str]
    ranking_parent_id: str | None = None
    message_tree_id: str | None = None
    # "all options are flawed": stored, but ignored when ranks are merged (as in the original)
    not_rankable: bool | None = None


class ExportMessageEventReport(BaseModel):
    """A user's report of a message; defined by the format, not produced by the original export."""

    model_config = _OPEN

    type: Literal["report"] = "report"
    user_id: str | None = None
    report_type: str
    reason: str


class ExportMessageEventScore(BaseModel):
    """A score in -1..1; defined by the format, not produced by the original export."""

    model_config = _OPEN

    type: Literal["score"] = "score"
    user_id: str | None = None
    score: int


class ExportMessageEventOther(BaseModel):
    """An event of a type this code does not know; kept as is so that newer files still load."""

    model_config = _OPEN

    type: str
    user_id: str | None = None


_EVENT_TYPES = frozenset({"emoji", "rating", "ranking", "report", "score"})


def _event_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in _EVENT_TYPES else "other"


ExportMessageEvent = Annotated[
    Annotated[ExportMessageEventEmoji, Tag("emoji")]
    | Annotated[ExportMessageEventRating, Tag("rating")]
    | Annotated[ExportMessageEventRanking, Tag("ranking")]
    | Annotated[ExportMessageEventReport, Tag("report")]
    | Annotated[ExportMessageEventScore, Tag("score")]
    | Annotated[ExportMessageEventOther, Tag("other")],
    Discriminator(_event_tag),
]


class ExportMessageNode(BaseModel):
    """One message and, in tree exports, its replies (sorted by merged rank, best first).

    `message_tree_id` and `tree_state` are null inside tree exports (the tree carries them) and set on
    the rows of flat exports.
    """

    model_config = _OPEN

    message_id: str
    parent_id: str | None = None
    user_id: str | None = None
    created_date: datetime | None = None
    text: str
    role: Role
    lang: str | None = None
    review_count: int | None = None
    review_result: bool | None = None
    deleted: bool | None = None
    rank: int | None = None
    synthetic: bool | None = None
    model_name: str | None = None
    emojis: dict[str, int] | None = None
    replies: list[ExportMessageNode] | None = None
    labels: dict[str, LabelAvgValue] | None = None
    events: dict[str, list[ExportMessageEvent]] | None = None
    detoxify: DetoxifyRating | None = None
    message_tree_id: str | None = None
    tree_state: str | None = None

    @field_validator("created_date")
    @classmethod
    def _assume_utc(cls, value: datetime | None) -> datetime | None:
        # The backend stores UTC; a naive timestamp from a hand-made file means UTC too, and keeping
        # every date aware lets callers compare them without TypeErrors.
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @field_serializer("created_date", when_used="json")
    def _isoformat(self, value: datetime | None) -> str | None:
        # pydantic writes UTC as "Z"; the released files use Python's "+00:00" form.
        return None if value is None else value.isoformat()


class ExportMessageTree(BaseModel):
    """One conversation tree: the initial prompt with all replies nested below it."""

    model_config = _OPEN

    message_tree_id: str
    tree_state: str | None = None
    prompt: ExportMessageNode | None = None
    # where an imported tree came from (the importer writes the file name); export leaves it null
    origin: str | None = None
    # trees that must land on the same side of a train/validation split share this (the inference export
    # gives every tree of one chat the chat's id: an edited first message starts a tree of its own); an
    # oasst extension, so it is written only when set and Open Assistant's own files stay byte for byte
    split_group: str | None = Field(default=None, exclude_if=lambda value: value is None)
