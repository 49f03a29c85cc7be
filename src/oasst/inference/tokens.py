"""Signed, short-lived user tokens for the inference chat API.

The website signs people in itself and then mints a token for the user with a secret it shares with the
inference server; the server only verifies. This module depends on nothing but the standard library and
``itsdangerous``, so the website can import it without the server.

A token is ``itsdangerous.URLSafeSerializer`` output over ``{"uid", "name", "exp"}`` with a salt of its own,
so a token signed for another purpose with the same secret is not accepted here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeSerializer

__all__ = ["TokenError", "UserClaims", "mint_user_token", "verify_user_token"]

_SALT = "oasst.inference.user-token.v1"
MAX_TTL_S = 7 * 24 * 3600


class TokenError(ValueError):
    """A token that cannot be accepted; ``code`` is ``token_invalid`` or ``token_expired``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class UserClaims:
    user_id: str
    display_name: str
    expires_at: float  # unix seconds


def _serializer(secret: str) -> URLSafeSerializer:
    if not secret:
        raise ValueError("the user token secret must not be empty")
    return URLSafeSerializer(secret, salt=_SALT)


def mint_user_token(secret: str, user_id: str, display_name: str, ttl: float = 3600) -> str:
    """A token that lets ``user_id`` use the chat API for ``ttl`` seconds (at most a week)."""
    if not user_id or len(user_id) > 256:
        raise ValueError("user_id must be 1 to 256 characters")
    if not 0 < ttl <= MAX_TTL_S:
        raise ValueError(f"ttl must be in (0, {MAX_TTL_S}] seconds")
    payload = {"uid": user_id, "name": display_name[:256], "exp": int(time.time() + ttl)}
    return _serializer(secret).dumps(payload)


def verify_user_token(secret: str, token: str, *, now: float | None = None) -> UserClaims:
    """The claims of a valid token; :class:`TokenError` for a forged, malformed or expired one."""
    try:
        payload = _serializer(secret).loads(token)
    except BadSignature as exc:
        raise TokenError("token_invalid", "The user token is not valid.") from exc
    if not isinstance(payload, dict):
        raise TokenError("token_invalid", "The user token is not valid.")
    uid, name, exp = payload.get("uid"), payload.get("name", ""), payload.get("exp")
    if not isinstance(uid, str) or not uid or not isinstance(exp, int) or not isinstance(name, str):
        raise TokenError("token_invalid", "The user token is not valid.")
    if exp <= (time.time() if now is None else now):
        raise TokenError("token_expired", "The user token has expired; sign in again.")
    return UserClaims(user_id=uid, display_name=name, expires_at=float(exp))
