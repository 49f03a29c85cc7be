"""The one domain error type of the backend, and every error code it uses.

Error bodies on the wire are ``{"message": str, "error_code": int}``, as in the original Open Assistant
backend. Codes below 10000 keep the original's numbers. Where the original reused one number for two
different errors, oasst gives the second error a new number of its own:

* ``TEXT_LABELS_DUPLICATE_TASK_REPLY`` is 2054 (the original shared 2053 with ``TEXT_LABELS_NO_SELF_LABELING``).
* ``TASK_NOT_ASSIGNED_TO_USER`` is 2108 (the original shared 2106 with ``TASK_NOT_COLLECTIVE``).

Codes that oasst adds (errors the original never reported because it let them through) live in the same
ranges and are marked "oasst" below.
"""

from __future__ import annotations

from enum import IntEnum
from http import HTTPStatus


class ErrorCode(IntEnum):
    """Stable error codes of the ``/api/v1`` API."""

    # 0-1000: general
    GENERIC_ERROR = 0
    DATABASE_URI_NOT_SET = 1
    API_CLIENT_NOT_AUTHORIZED = 2
    ROOT_TOKEN_NOT_AUTHORIZED = 3
    DATABASE_MAX_RETRIES_EXHAUSTED = 4
    SORT_KEY_UNSUPPORTED = 100
    INVALID_CURSOR_VALUE = 101
    REQUEST_VALIDATION_FAILED = 102  # oasst: malformed JSON or a field that fails validation
    NOT_FOUND = 103  # oasst: unknown route
    METHOD_NOT_ALLOWED = 104  # oasst
    TOO_MANY_REQUESTS = 429
    SERVER_ERROR0 = 500
    SERVER_ERROR1 = 501
    INVALID_AUTHENTICATION = 600

    # 1000-2000: tasks endpoint
    TASK_INVALID_REQUEST_TYPE = 1000
    TASK_ACK_FAILED = 1001
    TASK_NACK_FAILED = 1002
    TASK_INVALID_RESPONSE_TYPE = 1003
    TASK_INTERACTION_REQUEST_FAILED = 1004
    TASK_GENERATION_FAILED = 1005
    TASK_REQUESTED_TYPE_NOT_AVAILABLE = 1006
    TASK_AVAILABILITY_QUERY_FAILED = 1007
    TASK_MESSAGE_TOO_LONG = 1008
    TASK_MESSAGE_DUPLICATED = 1009
    TASK_MESSAGE_TEXT_EMPTY = 1010
    TASK_MESSAGE_DUPLICATE_REPLY = 1011
    TASK_TOO_MANY_PENDING = 1012
    TASK_PARENT_FULL = 1013  # oasst: the parent already has its maximum number of replies
    TASK_TREE_FULL = 1014  # oasst: the tree has reached its goal size or stopped growing

    # 2000-3000: messages, tasks, users
    INVALID_FRONTEND_MESSAGE_ID = 2000
    MESSAGE_NOT_FOUND = 2001
    RATING_OUT_OF_RANGE = 2002
    INVALID_RANKING_VALUE = 2003
    INVALID_TASK_TYPE = 2004
    NO_MESSAGE_TREE_FOUND = 2006
    NO_REPLIES_FOUND = 2007
    INVALID_MESSAGE = 2008
    BROKEN_CONVERSATION = 2009
    TREE_IN_ABORTED_STATE = 2010
    CORRUPT_RANKING_RESULT = 2011
    AUTH_AND_USERNAME_REQUIRED = 2012
    API_CLIENT_NOT_FOUND = 2013  # oasst
    REQUEST_CONFLICT = 2014  # oasst: a unique constraint not covered by a more specific code
    SYNTHETIC_REPLY_INVALID_PARENT = 2030  # oasst: a synthetic reply needs an accepted prompter message
    TEXT_LABELS_WRONG_MESSAGE_ID = 2050
    TEXT_LABELS_INVALID_LABEL = 2051
    TEXT_LABELS_MANDATORY_LABEL_MISSING = 2052
    TEXT_LABELS_NO_SELF_LABELING = 2053
    TEXT_LABELS_DUPLICATE_TASK_REPLY = 2054  # oasst: was 2053 in the original
    TASK_NOT_FOUND = 2100
    TASK_EXPIRED = 2101
    TASK_PAYLOAD_TYPE_MISMATCH = 2102
    TASK_ALREADY_UPDATED = 2103
    TASK_NOT_ACK = 2104
    TASK_ALREADY_DONE = 2105
    TASK_NOT_COLLECTIVE = 2106
    TASK_UNEXPECTED_PAYLOAD_TYPE_ = 2107
    TASK_NOT_ASSIGNED_TO_USER = 2108  # oasst: was 2106 in the original
    TASK_ALREADY_SKIPPED = 2109  # oasst

    # 3000-4000: external resources
    HUGGINGFACE_API_ERROR = 3001

    # 4000-5000: users
    USER_NOT_SPECIFIED = 4000
    USER_DISABLED = 4001
    USER_NOT_FOUND = 4002
    USER_HAS_NOT_ACCEPTED_TOS = 4003

    EMOJI_OP_UNSUPPORTED = 5000
    CACHED_STATS_NOT_AVAILABLE = 6000

    # 7000-8000: oasst import/export
    IMPORT_INVALID_FILE = 7000


class OasstError(Exception):
    """A domain error: services raise it; the API maps it to ``{"message", "error_code"}`` once."""

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
        self.retry_after = retry_after  # seconds, sent as a Retry-After header

    def __repr__(self) -> str:
        return f"OasstError({self.message!r}, {self.error_code.name}, {int(self.http_status)})"


# Unique constraints that requests can run into, and the error each means to a client. A check in the
# service would need a query per request and could still race; the database's own index cannot.
_CONFLICTS: dict[str, tuple[str, ErrorCode]] = {
    "uq_text_labels_task_review": (
        "You already reviewed this message.",
        ErrorCode.TEXT_LABELS_DUPLICATE_TASK_REPLY,
    ),
    "text_labels.message_id, text_labels.user_id": (
        "You already reviewed this message.",
        ErrorCode.TEXT_LABELS_DUPLICATE_TASK_REPLY,
    ),
    "uq_message_api_client_id_frontend_message_id": (
        "This frontend message id is already used by another message.",
        ErrorCode.INVALID_FRONTEND_MESSAGE_ID,
    ),
    "message.api_client_id, message.frontend_message_id": (
        "This frontend message id is already used by another message.",
        ErrorCode.INVALID_FRONTEND_MESSAGE_ID,
    ),
    "uq_task_api_client_id_frontend_message_id": (
        "This frontend message id is already used by another task.",
        ErrorCode.INVALID_FRONTEND_MESSAGE_ID,
    ),
    "task.api_client_id, task.frontend_message_id": (
        "This frontend message id is already used by another task.",
        ErrorCode.INVALID_FRONTEND_MESSAGE_ID,
    ),
}


def error_for_conflict(constraint_or_message: str) -> OasstError:
    """The client error for a violated unique constraint (PostgreSQL names it; SQLite lists columns)."""
    for key, (message, code) in _CONFLICTS.items():
        if key in constraint_or_message:
            return OasstError(message, code)
    return OasstError(
        "The request conflicts with existing data.", ErrorCode.REQUEST_CONFLICT, HTTPStatus.CONFLICT
    )
