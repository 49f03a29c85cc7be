"""The error-code table in the docs lists every code the backend can answer with."""

from __future__ import annotations

from pathlib import Path

from oasst.backend.errors import ErrorCode

DOC = Path(__file__).resolve().parents[2] / "docs" / "backend" / "errors.md"


def test_every_error_code_is_documented() -> None:
    text = DOC.read_text()
    missing = [c.name for c in ErrorCode if f"| {int(c)} | `{c.name}` |" not in text]
    assert missing == []


def test_codes_are_unique() -> None:
    values = [int(c) for c in ErrorCode]
    assert len(values) == len(set(values)), "two errors share a code: clients could not tell them apart"
