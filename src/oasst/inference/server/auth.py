"""Who may call what: signed user tokens (chat API), hashed keys (workers, /v1), root tokens (keys admin).

``mint_user_token`` lives in :mod:`oasst.inference.tokens` (dependency-free, for the website) and is
re-exported here.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from http import HTTPStatus

from pydantic import SecretStr

from oasst.inference.server.errors import ErrorCode, InferenceError
from oasst.inference.tokens import TokenError, UserClaims, mint_user_token, verify_user_token

__all__ = [
    "KEY_KINDS",
    "bearer",
    "check_root_token",
    "generate_key",
    "hash_key",
    "mint_user_token",
    "user_from_token",
]

KEY_KINDS = ("worker", "api")


def generate_key(kind: str) -> str:
    """A new secret key; its prefix says what it is for (``oiw_`` worker, ``oia_`` API)."""
    return f"oi{kind[0]}_{secrets.token_urlsafe(32)}"


def hash_key(key: str) -> str:
    # keys are 256 random bits: a fast hash is enough, and lets a lookup use the unique index
    return hashlib.sha256(key.encode()).hexdigest()


def bearer(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer ...`` header."""
    if not authorization:
        raise InferenceError(
            "Send Authorization: Bearer <token>.", ErrorCode.AUTH_MISSING, HTTPStatus.UNAUTHORIZED
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InferenceError(
            "Send Authorization: Bearer <token>.", ErrorCode.AUTH_MISSING, HTTPStatus.UNAUTHORIZED
        )
    return token.strip()


def user_from_token(secret: str, token: str) -> UserClaims:
    try:
        return verify_user_token(secret, token)
    except TokenError as exc:
        code = ErrorCode.TOKEN_EXPIRED if exc.code == "token_expired" else ErrorCode.TOKEN_INVALID
        raise InferenceError(str(exc), code, HTTPStatus.UNAUTHORIZED) from exc


def check_root_token(root_tokens: list[SecretStr], token: str) -> None:
    if not any(hmac.compare_digest(t.get_secret_value(), token) for t in root_tokens):
        raise InferenceError("Not a root token.", ErrorCode.ROOT_TOKEN_INVALID, HTTPStatus.FORBIDDEN)
