"""The one error type the client raises, and the few backend error codes callers react to.

Every failed call raises :class:`OasstApiError`: an HTTP error answer of the backend (its
``{"message", "error_code"}`` body), an answer the client cannot read, or, as the subclass
:class:`OasstConnectionError`, a backend that cannot be reached at all::

    OasstApiError(status, error_code, message)
     └── OasstConnectionError   status 0: no HTTP answer (refused, timed out, DNS, ...)

The codes are the backend's wire contract (``oasst.backend.errors.ErrorCode``, the same numbers as the
original Open Assistant); only those that clients act on are named here.
"""

from __future__ import annotations

from enum import IntEnum


class ApiErrorCode(IntEnum):
    """Backend error codes that callers commonly branch on."""

    GENERIC_ERROR = 0
    API_CLIENT_NOT_AUTHORIZED = 2
    ROOT_TOKEN_NOT_AUTHORIZED = 3
    DATABASE_MAX_RETRIES_EXHAUSTED = 4
    REQUEST_VALIDATION_FAILED = 102
    NOT_FOUND = 103
    TOO_MANY_REQUESTS = 429
    TASK_REQUESTED_TYPE_NOT_AVAILABLE = 1006
    TASK_TOO_MANY_PENDING = 1012
    USER_DISABLED = 4001
    USER_HAS_NOT_ACCEPTED_TOS = 4003


class OasstApiError(Exception):
    """A call to an oasst API failed.

    ``status`` is the HTTP status (0 when no answer came), ``error_code`` the backend's error code
    (``ApiErrorCode.GENERIC_ERROR`` when the answer carried none), ``message`` the human-readable reason.
    """

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(status, error_code, message)
        self.status = status
        self.error_code = error_code
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status}, error {self.error_code})"

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(status={self.status}, error_code={self.error_code}, message={self.message!r})"


class OasstConnectionError(OasstApiError):
    """The server could not be reached or did not answer in time."""

    def __init__(self, message: str) -> None:
        super().__init__(0, ApiErrorCode.GENERIC_ERROR, message)

    def __str__(self) -> str:
        return self.message
