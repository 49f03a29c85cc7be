"""Reading and writing training records as JSONL (`.jsonl`, or `.jsonl.gz` compressed).

Writing goes through `oasst.data`'s writer: to a temporary file that replaces the target only once every
record is written, so a failed run leaves nothing half-written. Reading checks each line against the
record kind and names the file and line of the first bad one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

from oasst.data import OasstDataError, Source, Target, open_jsonl
from oasst.data.writer import write_jsonl_text
from oasst.training.datasets import KINDS, UNKNOWN_LANG, Kind, Record

__all__ = ["check_record", "content_id", "read_records", "write_records"]

ROLES = frozenset({"system", "user", "assistant"})
_BATCH = 256  # records per write: fewer, larger writes


def write_records(target: Target, records: Iterable[Record]) -> int:
    """Write one record per line (UTF-8, no ASCII escapes) and return how many were written."""
    count = 0

    def chunks() -> Iterator[str]:
        nonlocal count
        batch: list[str] = []
        for record in records:
            batch.append(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
            if len(batch) >= _BATCH:
                yield "".join(batch)
                batch.clear()
        if batch:
            yield "".join(batch)

    write_jsonl_text(target, chunks())
    return count


def read_records(source: Source, kind: Kind | None = None) -> Iterator[Record]:
    """Yield the records of a JSONL file, checked against `kind` when given.

    A record without `tree_id` gets a hash of its content (so identical examples stay on one side of a
    split), one without `lang` gets "und". Errors are `OasstDataError`s naming the file and line.
    """
    name = os.fspath(source) if isinstance(source, str | os.PathLike) else getattr(source, "name", "<stream>")
    lineno = 0
    try:
        with open_jsonl(source) as stream:
            for raw in stream:
                lineno += 1
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise OasstDataError(f"invalid JSON: {exc}") from exc
                if kind is not None:
                    check_record(record, kind)
                elif not isinstance(record, dict):
                    raise OasstDataError(f"expected a JSON object, found {type(record).__name__}")
                record.setdefault("tree_id", content_id(record))
                record.setdefault("lang", UNKNOWN_LANG)
                yield record
    except OasstDataError as exc:
        raise exc.located(str(name), lineno) from exc.__cause__
    except (OSError, EOFError) as exc:
        raise OasstDataError(f"cannot read: {exc}", path=str(name), line=lineno or None) from exc


def content_id(record: Record) -> str:
    """A stable id for a record that has none: a hash of its content."""
    text = json.dumps(record, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _check_messages(value: Any, field: str, *, last: str | None = None) -> None:
    if not isinstance(value, list) or not value:
        raise OasstDataError(f"{field!r} must be a non-empty list of messages")
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise OasstDataError(f"{field}[{i}] must be an object with 'role' and 'content'")
        if message.get("role") not in ROLES:
            raise OasstDataError(f"{field}[{i}].role must be one of system, user, assistant")
        if not isinstance(message.get("content"), str):
            raise OasstDataError(f"{field}[{i}].content must be a string")
    if last is not None and value[-1]["role"] != last:
        raise OasstDataError(f"{field!r} must end with a message of role {last}")


def check_record(record: Any, kind: Kind) -> None:
    """Raise `OasstDataError` unless `record` is a well-formed record of `kind`."""
    if not isinstance(record, dict):
        raise OasstDataError(f"expected a JSON object, found {type(record).__name__}")
    if kind == "sft":
        _check_messages(record.get("messages"), "messages", last="assistant")
    elif kind == "rm":
        _check_messages(record.get("prompt"), "prompt", last="user")
        replies = record.get("replies")
        if not isinstance(replies, list) or len(replies) < 2 or not all(isinstance(r, str) for r in replies):
            raise OasstDataError("'replies' must be a list of at least two strings, best first")
    elif kind == "dpo":
        _check_messages(record.get("prompt"), "prompt", last="user")
        _check_messages(record.get("chosen"), "chosen", last="assistant")
        _check_messages(record.get("rejected"), "rejected", last="assistant")
    elif kind == "rl":
        _check_messages(record.get("prompt"), "prompt", last="user")
    else:
        raise OasstDataError(f"unknown record kind {kind!r}; use one of {', '.join(KINDS)}")
    for key in ("tree_id", "lang", "split_group"):
        if key in record and not isinstance(record[key], str):
            raise OasstDataError(f"{key!r} must be a string")
