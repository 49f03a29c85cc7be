"""The one error type of `oasst.data`.

Everything that can go wrong while reading or rebuilding an export (bad JSON, a line that is neither a
tree nor a message, a field of the wrong type, a flat file whose trees cannot be rebuilt) is raised as
`OasstDataError`, so callers such as the CLI and the backend importer catch one type and can show the
user *where* the problem is (file and line) and *what* it is.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class OasstDataError(ValueError):
    """Invalid oasst data, with the file and 1-based line number where it was found when known."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.path = path
        self.line = line
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "
        elif self.line is not None:
            where = f"line {self.line}: "
        return where + self.message

    def located(self, path: str, line: int | None) -> OasstDataError:
        """Return a copy that names the file and line, keeping any location already known."""
        return OasstDataError(
            self.message,
            path=self.path if self.path is not None else path,
            line=self.line if self.line is not None else line,
        )


def describe_validation_error(exc: ValidationError, limit: int = 3) -> str:
    """Summarise a pydantic error in one line: the first few field paths and what was wrong there.

    Pydantic's own message spans many lines and repeats the whole input; for a data file with long
    texts that buries the useful part, so only field locations and messages are kept.
    """
    errors = exc.errors(include_url=False, include_input=False)
    parts = [f"{_loc(err['loc'])}: {err['msg']}" for err in errors[:limit]]
    more = len(errors) - limit
    if more > 0:
        parts.append(f"and {more} more error(s)")
    return "; ".join(parts)


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<root>"
