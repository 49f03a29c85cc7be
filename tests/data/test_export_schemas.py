"""The export models: field types, unknown fields kept, dates written as the releases write them."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from oasst.data import (
    ExportMessageEventEmoji,
    ExportMessageEventOther,
    ExportMessageEventRanking,
    ExportMessageEventReport,
    ExportMessageEventScore,
    ExportMessageNode,
)

NodeDict = Callable[..., dict[str, Any]]


def test_unknown_fields_are_kept_in_place(node_dict: NodeDict) -> None:
    raw = node_dict("m1", None, CRITERIA={"Relevance": 0.6}, future_field=[1, None])
    node = ExportMessageNode.model_validate(raw)
    dumped = node.model_dump(mode="json")
    assert dumped["CRITERIA"] == {"Relevance": 0.6}
    assert dumped["future_field"] == [1, None]
    # known fields first in the release's order, unknown ones after them
    assert list(dumped)[-2:] == ["CRITERIA", "future_field"]


def test_created_date_is_aware_and_written_with_utc_offset(node_dict: NodeDict) -> None:
    node = ExportMessageNode.model_validate(node_dict("m1", None))
    assert node.created_date == datetime(2023, 2, 12, 19, 6, 16, 233571, tzinfo=UTC)
    assert node.model_dump(mode="json")["created_date"] == "2023-02-12T19:06:16.233571+00:00"


def test_naive_created_date_is_taken_as_utc(node_dict: NodeDict) -> None:
    node = ExportMessageNode.model_validate(node_dict("m1", None, created_date="2023-02-12T19:06:16"))
    assert node.created_date is not None and node.created_date.utcoffset() is not None
    assert node.model_dump(mode="json")["created_date"] == "2023-02-12T19:06:16+00:00"


def test_events_are_parsed_by_type_and_unknown_types_kept(node_dict: NodeDict) -> None:
    events = {
        "emoji": [{"type": "emoji", "user_id": "u1", "emoji": "+1"}],
        "ranking": [
            {
                "type": "ranking",
                "user_id": "u2",
                "ranking": [1, 0],
                "ranked_message_ids": ["b", "a"],
                "ranking_parent_id": "m1",
                "message_tree_id": "m1",
                "not_rankable": False,
            }
        ],
        "report": [{"type": "report", "user_id": "u3", "report_type": "spam", "reason": "ads"}],
        "score": [{"type": "score", "user_id": None, "score": -1}],
        "vote": [{"type": "vote", "user_id": "u4", "weight": 2}],
    }
    node = ExportMessageNode.model_validate(node_dict("m1", None, events=events))
    assert node.events is not None
    assert isinstance(node.events["emoji"][0], ExportMessageEventEmoji)
    assert isinstance(node.events["ranking"][0], ExportMessageEventRanking)
    assert isinstance(node.events["report"][0], ExportMessageEventReport)
    assert isinstance(node.events["score"][0], ExportMessageEventScore)
    assert isinstance(node.events["vote"][0], ExportMessageEventOther)
    assert node.model_dump(mode="json")["events"] == events


def test_role_must_be_prompter_or_assistant(node_dict: NodeDict) -> None:
    with pytest.raises(ValidationError):
        ExportMessageNode.model_validate(node_dict("m1", None, role="system"))


def test_missing_optional_fields_default_to_null(node_dict: NodeDict) -> None:
    node = ExportMessageNode.model_validate({"message_id": "m", "text": "hi", "role": "prompter"})
    assert node.parent_id is None and node.replies is None
    assert json.loads(json.dumps(node.model_dump(mode="json", exclude_none=True))) == {
        "message_id": "m",
        "text": "hi",
        "role": "prompter",
    }
