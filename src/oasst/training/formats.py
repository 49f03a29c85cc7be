"""Adapters from common instruction-data formats to oasst SFT records.

Each adapter turns a file of another format into the SFT records of `oasst.training.datasets`
(``{"messages": [...], "tree_id", "lang"}``), so instruction data mixes with oasst threads:

* ``alpaca``: ``{"instruction", "input" (optional), "output"}``; the input follows the instruction
  after a blank line.
* ``sharegpt``: ``{"conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...]}``.
* ``openai``: ``{"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}``, the
  OpenAI fine-tuning format (and oasst's own SFT records).
* ``prompt-response``: one exchange per row, ``{"prompt", "response"}``; also accepted are the keys of
  the original Open Assistant's instruction datasets (``INSTRUCTION``/``RESPONSE``), ``prompt``/
  ``completion`` and ``question``/``answer``.
* ``hf-disk``: a Hugging Face dataset saved with ``save_to_disk``; its rows may be any of the formats
  above, recognised by the column names. Needs the ``datasets`` package (``pip install 'oasst[train]'``).

Files are JSONL (one object per line, `.gz` allowed) or, as Alpaca and ShareGPT are usually shipped, one
JSON array. A row that cannot be converted is an `OasstDataError` naming the file and the line (or the
array item); nothing is skipped silently. A conversation that ends with user turns loses them (nothing
to learn from); one without any assistant reply is an error. A row's ``lang`` is kept when it has one;
its ``tree_id`` (or ``id``) too, else a hash of its content is the id, so duplicates split together.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from oasst.data import OasstDataError, open_jsonl
from oasst.training.datasets import UNKNOWN_LANG, Record
from oasst.training.datasets_io import content_id

__all__ = ["FORMATS", "Format", "convert_row", "detect_format", "read_format"]

Format = Literal["alpaca", "sharegpt", "openai", "prompt-response", "hf-disk"]
FORMATS: tuple[Format, ...] = ("alpaca", "sharegpt", "openai", "prompt-response", "hf-disk")
RowFormat = Literal["alpaca", "sharegpt", "openai", "prompt-response"]

_SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
}
_PROMPT_KEYS: tuple[tuple[str, str], ...] = (
    ("prompt", "response"),
    ("INSTRUCTION", "RESPONSE"),
    ("prompt", "completion"),
    ("question", "answer"),
    ("instruction", "response"),
)


def _text(row: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = row.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        what = "missing" if value is None else f"a {type(value).__name__}, not a string"
        raise OasstDataError(f"{key!r} is {what}")
    return value


def _content(value: Any, where: str) -> str:
    # OpenAI content may be a list of parts; only text parts are meaningful here
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        return "".join(str(p.get("text", "")) for p in value)
    raise OasstDataError(f"{where} must be a string (or a list of text parts)")


def _alpaca(row: dict[str, Any]) -> list[dict[str, str]]:
    instruction, extra = _text(row, "instruction"), _text(row, "input", required=False)
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": _text(row, "output")}]
    if system := _text(row, "system", required=False):
        messages.insert(0, {"role": "system", "content": system})
    return messages


def _sharegpt(row: dict[str, Any]) -> list[dict[str, str]]:
    turns = row.get("conversations")
    if not isinstance(turns, list):
        raise OasstDataError("'conversations' must be a list of {'from', 'value'} objects")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise OasstDataError(f"conversations[{i}] must be an object")
        speaker = turn.get("from", turn.get("role"))
        role = _SHAREGPT_ROLES.get(str(speaker).lower())
        if role is None:
            known = ", ".join(sorted(_SHAREGPT_ROLES))
            raise OasstDataError(f"conversations[{i}].from is {speaker!r}; expected one of {known}")
        value = turn.get("value", turn.get("content"))
        messages.append({"role": role, "content": _content(value, f"conversations[{i}].value")})
    return messages


def _openai(row: dict[str, Any]) -> list[dict[str, str]]:
    turns = row.get("messages")
    if not isinstance(turns, list):
        raise OasstDataError("'messages' must be a list of {'role', 'content'} objects")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("role") not in ("system", "user", "assistant"):
            raise OasstDataError(f"messages[{i}].role must be system, user or assistant")
        messages.append({"role": turn["role"], "content": _content(turn.get("content"), f"messages[{i}]")})
    return messages


def _prompt_response(row: dict[str, Any]) -> list[dict[str, str]]:
    for prompt_key, response_key in _PROMPT_KEYS:
        if prompt_key in row and response_key in row:
            return [
                {"role": "user", "content": _text(row, prompt_key)},
                {"role": "assistant", "content": _text(row, response_key)},
            ]
    pairs = ", ".join(f"{p}/{r}" for p, r in _PROMPT_KEYS)
    raise OasstDataError(f"no prompt and response keys; expected one of {pairs}")


_ROW_CONVERTERS: dict[str, Callable[[dict[str, Any]], list[dict[str, str]]]] = {
    "alpaca": _alpaca,
    "sharegpt": _sharegpt,
    "openai": _openai,
    "prompt-response": _prompt_response,
}


def _check_conversation(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    while messages and messages[-1]["role"] == "user":
        messages.pop()
    turns = [m for m in messages if m["role"] != "system"]
    if not any(m["role"] == "assistant" for m in turns):
        raise OasstDataError("the conversation has no assistant reply")
    if any(m["role"] == "system" for m in messages[len(messages) - len(turns) :]):
        raise OasstDataError("system messages may only come first")
    for before, after in itertools.pairwise(turns):
        if before["role"] == after["role"]:
            raise OasstDataError(f"two {after['role']} messages in a row; user and assistant must alternate")
    if turns[0]["role"] != "user":
        raise OasstDataError("the conversation must start with a user message (after any system message)")
    return messages


def convert_row(row: Any, fmt: RowFormat) -> Record:
    """One row of `fmt` as an SFT record; raises `OasstDataError` saying what is wrong with it."""
    if not isinstance(row, dict):
        raise OasstDataError(f"expected a JSON object, found {type(row).__name__}")
    converter = _ROW_CONVERTERS.get(fmt)
    if converter is None:
        raise OasstDataError(f"unknown format {fmt!r}; use one of {', '.join(_ROW_CONVERTERS)}")
    record: Record = {"messages": _check_conversation(converter(row))}
    tree_id = row.get("tree_id", row.get("id"))
    record["tree_id"] = str(tree_id) if tree_id is not None else content_id(record)
    lang = row.get("lang")
    record["lang"] = lang if isinstance(lang, str) and lang else UNKNOWN_LANG
    return record


def detect_format(columns: Any) -> RowFormat:
    """The row format that a row's keys (or a dataset's column names) indicate."""
    keys = set(columns)
    if "messages" in keys:
        return "openai"
    if "conversations" in keys:
        return "sharegpt"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    if any({p, r} <= keys for p, r in _PROMPT_KEYS):
        return "prompt-response"
    if {"message_id", "parent_id"} <= keys:
        raise OasstDataError(
            "these are oasst messages; write them as JSONL (dataset.to_json('messages.jsonl')) and "
            "convert that file as an oasst export"
        )
    raise OasstDataError(
        f"cannot tell the format from the columns {sorted(keys)}; expected messages (openai), "
        "conversations (sharegpt), instruction/output (alpaca) or prompt/response"
    )


def _rows(source: str | os.PathLike[str]) -> Iterator[tuple[str, dict[str, Any] | Any]]:
    """(location, row) for a JSONL file or a file holding one JSON array."""
    path = os.fspath(source)
    with open_jsonl(path) as stream:
        head = stream.read(64)
        first = (head.decode("utf-8", "replace") if isinstance(head, bytes) else head).lstrip()
    if first.startswith("["):
        with open_jsonl(path) as stream:
            try:
                rows = json.load(stream)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise OasstDataError(f"invalid JSON: {exc}", path=path) from exc
        for i, row in enumerate(rows):
            yield f"item {i}", row
        return
    with open_jsonl(path) as stream:
        for lineno, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise OasstDataError(f"invalid JSON: {exc}", path=path, line=lineno) from exc
            yield str(lineno), row


def _read_file(source: str | os.PathLike[str], fmt: RowFormat) -> Iterator[Record]:
    path = os.fspath(source)
    for where, row in _rows(path):
        try:
            yield convert_row(row, fmt)
        except OasstDataError as exc:
            if where.isdigit():
                raise exc.located(path, int(where)) from exc
            raise OasstDataError(f"{where}: {exc.message}", path=path) from exc


def _read_hf_disk(source: str | os.PathLike[str], split: str | None) -> Iterator[Record]:
    try:
        import datasets  # an optional dependency: only this adapter needs it
    except ImportError as exc:
        raise OasstDataError(
            "reading a Hugging Face dataset from disk needs the 'datasets' package: "
            "pip install 'oasst[train]'"
        ) from exc
    path = os.fspath(source)
    if not Path(path).is_dir():
        raise OasstDataError("not a directory written by save_to_disk", path=path)
    try:
        loaded = datasets.load_from_disk(path)
    except (FileNotFoundError, ValueError) as exc:
        raise OasstDataError(f"cannot load a dataset saved to disk: {exc}", path=path) from exc
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded.keys())
        chosen = split or ("train" if "train" in names else names[0] if len(names) == 1 else None)
        if chosen not in names:
            raise OasstDataError(f"choose a split: the dataset has {', '.join(names)}", path=path)
        loaded = loaded[chosen]
    try:
        fmt = detect_format(loaded.column_names)
    except OasstDataError as exc:
        raise exc.located(path, None) from exc
    for i, row in enumerate(loaded):
        try:
            yield convert_row(row, fmt)
        except OasstDataError as exc:
            raise OasstDataError(f"row {i}: {exc.message}", path=path) from exc


def read_format(source: str | os.PathLike[str], fmt: Format, *, split: str | None = None) -> Iterator[Record]:
    """Yield the SFT records of a file (or, for ``hf-disk``, a dataset directory) in format `fmt`.

    `split` picks the split of a saved `DatasetDict` (default: "train", or its only split).
    """
    if fmt == "hf-disk":
        return _read_hf_disk(source, split)
    if fmt not in _ROW_CONVERTERS:
        raise OasstDataError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if split is not None:
        raise OasstDataError("a split can only be chosen for hf-disk datasets")
    return _read_file(source, fmt)
