"""Each instruction-data adapter on a tiny file of its format, and its errors."""

from __future__ import annotations

import gzip
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from oasst.data import OasstDataError
from oasst.training.datasets_io import check_record
from oasst.training.formats import convert_row, detect_format, read_format


def jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def messages(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


def test_alpaca_json_array_with_and_without_input(tmp_path: Path) -> None:
    path = tmp_path / "alpaca.json"
    rows = [
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
        {"instruction": "Say hi.", "input": "", "output": "Hi!"},
    ]
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    records = list(read_format(path, "alpaca"))
    assert [r["messages"] for r in records] == [
        messages(("user", "Add the numbers.\n\n2 and 3"), ("assistant", "5")),
        messages(("user", "Say hi."), ("assistant", "Hi!")),
    ]
    for record in records:
        check_record(record, "sft")
        assert record["lang"] == "und" and len(record["tree_id"]) == 32


def test_sharegpt_jsonl_maps_speakers_and_drops_a_trailing_user_turn(tmp_path: Path) -> None:
    row = {
        "id": "conv-1",
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello"},
            {"from": "human", "value": "Bye?"},
        ],
    }
    (record,) = read_format(jsonl(tmp_path / "sg.jsonl", [row]), "sharegpt")
    assert record["messages"] == messages(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"))
    assert record["tree_id"] == "conv-1"


def test_openai_messages_gzipped_with_text_parts_and_lang(tmp_path: Path) -> None:
    row = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hal"}, {"type": "text", "text": "lo"}]},
            {"role": "assistant", "content": "Guten Tag"},
        ],
        "lang": "de",
    }
    path = tmp_path / "chat.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    (record,) = read_format(path, "openai")
    assert record["messages"] == messages(("user", "Hallo"), ("assistant", "Guten Tag"))
    assert record["lang"] == "de"


def test_prompt_response_accepts_the_common_key_pairs(tmp_path: Path) -> None:
    rows = [
        {"prompt": "p1", "response": "r1"},
        {"INSTRUCTION": "p2", "RESPONSE": "r2", "SOURCE": "oa"},
        {"prompt": "p3", "completion": "r3"},
        {"question": "p4", "answer": "r4"},
    ]
    records = list(read_format(jsonl(tmp_path / "pr.jsonl", rows), "prompt-response"))
    assert [r["messages"] for r in records] == [
        messages(("user", f"p{i}"), ("assistant", f"r{i}")) for i in range(1, 5)
    ]
    # identical rows get the same id, so a split keeps duplicates together
    again = list(read_format(jsonl(tmp_path / "pr2.jsonl", rows[:1]), "prompt-response"))
    assert again[0]["tree_id"] == records[0]["tree_id"]


def test_a_bad_row_names_the_line_or_the_item(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "pr.jsonl", [{"prompt": "a", "response": "b"}, {"prompt": "a"}])
    with pytest.raises(OasstDataError, match=r"pr\.jsonl:2: no prompt and response keys"):
        list(read_format(path, "prompt-response"))
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"prompt": "a", "response": "b"}\n\n{"prompt": \n', encoding="utf-8")
    with pytest.raises(OasstDataError, match=r"bad\.jsonl:3: invalid JSON"):
        list(read_format(bad_json, "prompt-response"))
    array = tmp_path / "alpaca.json"
    array.write_text(json.dumps([{"instruction": "x", "output": "y"}, {"instruction": "x", "output": 3}]))
    with pytest.raises(OasstDataError, match=r"alpaca\.json: item 1: 'output' is a int, not a string"):
        list(read_format(array, "alpaca"))


@pytest.mark.parametrize(
    ("row", "error"),
    [
        ({"conversations": [{"from": "human", "value": "only a question"}]}, "no assistant reply"),
        ({"conversations": [{"from": "robot", "value": "x"}]}, "expected one of"),
        (
            {"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "b"}]},
            "must start with a user",  # the trailing user turn goes; the reply has no question
        ),
        (
            {
                "conversations": [
                    {"from": "human", "value": "a"},
                    {"from": "human", "value": "b"},
                    {"from": "gpt", "value": "c"},
                ]
            },
            "two user messages in a row",
        ),
        (
            {
                "conversations": [
                    {"from": "human", "value": "a"},
                    {"from": "system", "value": "s"},
                    {"from": "gpt", "value": "c"},
                ]
            },
            "system messages may only come first",
        ),
        (
            {
                "conversations": [
                    {"from": "gpt", "value": "a"},
                    {"from": "human", "value": "b"},
                    {"from": "gpt", "value": "c"},
                ]
            },
            "must start with a user",
        ),
    ],
)
def test_conversations_that_cannot_train_are_refused(row: dict[str, Any], error: str) -> None:
    with pytest.raises(OasstDataError, match=error):
        convert_row(row, "sharegpt")


def test_detect_format_from_columns() -> None:
    assert detect_format(["messages"]) == "openai"
    assert detect_format(["conversations", "id"]) == "sharegpt"
    assert detect_format(["instruction", "input", "output"]) == "alpaca"
    assert detect_format(["INSTRUCTION", "RESPONSE", "SOURCE"]) == "prompt-response"
    with pytest.raises(OasstDataError, match="oasst messages"):
        detect_format(["message_id", "parent_id", "text"])
    with pytest.raises(OasstDataError, match="cannot tell the format"):
        detect_format(["a", "b"])


def test_hf_disk_without_the_datasets_package_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(OasstDataError, match=r"pip install 'oasst\[train\]'"):
        list(read_format(tmp_path, "hf-disk"))


class FakeDataset(list[dict[str, Any]]):
    @property
    def column_names(self) -> list[str]:
        return list(self[0])


class FakeDatasetDict(dict[str, FakeDataset]):
    pass


def test_hf_disk_reads_a_saved_dataset_dict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saved = {
        "train": FakeDataset([{"instruction": "a", "input": "", "output": "b"}]),
        "test": FakeDataset([{"instruction": "c", "input": "", "output": "d"}]),
    }
    fake = types.ModuleType("datasets")
    fake.DatasetDict = FakeDatasetDict  # type: ignore[attr-defined]
    fake.load_from_disk = lambda path: FakeDatasetDict(saved)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    (record,) = read_format(tmp_path, "hf-disk")
    assert record["messages"] == messages(("user", "a"), ("assistant", "b"))
    (record,) = read_format(tmp_path, "hf-disk", split="test")
    assert record["messages"] == messages(("user", "c"), ("assistant", "d"))
    with pytest.raises(OasstDataError, match="choose a split: the dataset has train, test"):
        list(read_format(tmp_path, "hf-disk", split="validation"))
    with pytest.raises(OasstDataError, match="not a directory"):
        list(read_format(tmp_path / "nope", "hf-disk"))
    with pytest.raises(OasstDataError, match="only be chosen for hf-disk"):
        list(read_format(tmp_path / "x.jsonl", "alpaca", split="train"))
