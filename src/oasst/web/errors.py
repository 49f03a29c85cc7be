"""The website's one error type, with stable codes, rendered as a page (or JSON for scripts) in one place.

Backend errors keep their numeric Open Assistant code, as ``backend_<code>``, so a message can be looked
up in docs/backend/errors.md.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable
from http import HTTPStatus
from typing import TypeVar

from oasst.client import OasstApiError
from oasst.web.i18n import gettext as _


class WebErrorCode(enum.StrEnum):
    CSRF_FAILED = "csrf_failed"
    SIGN_IN_REQUIRED = "sign_in_required"
    BANNED = "banned"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    INVALID_INPUT = "invalid_input"
    LINK_INVALID = "link_invalid"
    PROVIDER_DISABLED = "provider_disabled"
    OAUTH_FAILED = "oauth_failed"
    BACKEND_UNAVAILABLE = "backend_unavailable"
    TASK_EXPIRED = "task_expired"


class WebError(Exception):
    def __init__(self, status: int, code: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.hint = hint


class SignInRequired(WebError):
    def __init__(self, next_url: str = "/") -> None:
        super().__init__(HTTPStatus.UNAUTHORIZED, WebErrorCode.SIGN_IN_REQUIRED, _("Please sign in first."))
        self.next_url = next_url


class TermsRequired(Exception):
    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


def forbidden(message: str | None = None) -> WebError:
    return WebError(
        HTTPStatus.FORBIDDEN, WebErrorCode.FORBIDDEN, message or _("You are not allowed to do that.")
    )


def invalid(message: str) -> WebError:
    return WebError(HTTPStatus.UNPROCESSABLE_ENTITY, WebErrorCode.INVALID_INPUT, message)


def not_found(message: str | None = None) -> WebError:
    return WebError(HTTPStatus.NOT_FOUND, WebErrorCode.NOT_FOUND, message or _("Not found."))


T = TypeVar("T")
D = TypeVar("D")


async def unless_missing(call: Awaitable[T], default: D) -> T | D:
    """The backend's answer, or ``default`` when it says 404 (no stats yet, no rank, no state row)."""
    try:
        return await call
    except OasstApiError as exc:
        if exc.status == HTTPStatus.NOT_FOUND:
            return default
        raise
