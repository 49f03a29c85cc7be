"""The one domain error type of the inference server, and every error code it uses.

Bodies on the wire are ``{"message": str, "error_code": int}`` like the backend's (OpenAI-compatible
routes under ``/v1`` wrap the same information in OpenAI's ``{"error": {...}}`` shape). Codes:

* 100-199 general: validation, not found, server errors
* 600-699 authentication: user tokens, API/worker keys, root tokens
* 8000-8099 chats and messages
* 8100-8199 queueing and generation
"""

from __future__ import annotations

from enum import IntEnum
from http import HTTPStatus


class ErrorCode(IntEnum):
    GENERIC_ERROR = 0
    REQUEST_VALIDATION_FAILED = 102
    NOT_FOUND = 103
    METHOD_NOT_ALLOWED = 104
    SERVER_ERROR = 500
    DATABASE_BUSY = 501

    AUTH_MISSING = 600  # no Authorization header
    TOKEN_INVALID = 601  # forged or malformed user token
    TOKEN_EXPIRED = 602
    KEY_INVALID = 603  # unknown or disabled API/worker key
    KEY_WRONG_KIND = 604  # a worker key used on /v1 or the other way round
    ROOT_TOKEN_INVALID = 605
    PROTOCOL_VERSION_UNSUPPORTED = 606

    CHAT_NOT_FOUND = 8000
    MESSAGE_NOT_FOUND = 8001
    INVALID_PARENT = 8002  # the tree rules (root only in an empty chat, turns alternate, ...)
    MESSAGE_TOO_LONG = 8003
    CHAT_TOO_LONG = 8004
    NOT_AN_ASSISTANT_MESSAGE = 8005
    MESSAGE_NOT_FINISHED = 8006
    NOT_A_DRAFT = 8007
    INVALID_EXPORT_FORMAT = 8008

    MODEL_UNKNOWN = 8100
    PRESET_UNKNOWN = 8101
    QUEUE_FULL = 8102
    TOO_MANY_DRAFTS = 8103
    GENERATION_FAILED = 8104
    GENERATION_TIMEOUT = 8105
    TOO_MANY_REPLIES = 8106  # the per-user limit on asked-for assistant replies


class InferenceError(Exception):
    """A domain error: services raise it; the app maps it to HTTP once."""

    def __init__(
        self,
        message: str,
        error_code: ErrorCode,
        http_status: HTTPStatus = HTTPStatus.BAD_REQUEST,
        *,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message, error_code, http_status)
        self.message = message
        self.error_code = error_code
        self.http_status = http_status
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"InferenceError({self.message!r}, {self.error_code.name}, {int(self.http_status)})"


def not_found(what: str = "chat") -> InferenceError:
    code = ErrorCode.CHAT_NOT_FOUND if what == "chat" else ErrorCode.MESSAGE_NOT_FOUND
    return InferenceError(f"No such {what}.", code, HTTPStatus.NOT_FOUND)
