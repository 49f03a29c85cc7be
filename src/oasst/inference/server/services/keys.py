"""Worker and API keys: created once (the key is returned once), then only their hash is kept."""

from __future__ import annotations

import time
from http import HTTPStatus

from sqlalchemy import select
from sqlalchemy.orm import Session

from oasst.inference.server.auth import KEY_KINDS, generate_key, hash_key
from oasst.inference.server.errors import ErrorCode, InferenceError
from oasst.inference.server.ids import new_id
from oasst.inference.server.models import ApiKey


def create_key(session: Session, *, kind: str, name: str) -> tuple[ApiKey, str]:
    if kind not in KEY_KINDS:
        raise InferenceError(f"kind must be one of {KEY_KINDS}.", ErrorCode.REQUEST_VALIDATION_FAILED)
    key = generate_key(kind)
    row = ApiKey(id=new_id(), name=name, kind=kind, key_hash=hash_key(key), enabled=True)
    session.add(row)
    session.flush()
    return row, key


def verify_key(session: Session, key: str, *, kind: str) -> ApiKey:
    row = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(key))).one_or_none()
    if row is None or not row.enabled:
        raise InferenceError("Unknown or disabled key.", ErrorCode.KEY_INVALID, HTTPStatus.UNAUTHORIZED)
    if row.kind != kind:
        raise InferenceError(
            f"This is a {row.kind} key; this endpoint needs a {kind} key.",
            ErrorCode.KEY_WRONG_KIND,
            HTTPStatus.FORBIDDEN,
        )
    return row


class VerifiedKeys:
    """Keys verified in the last ``ttl_s`` seconds, so a busy /v1 client is not looked up per request.

    Only keys that passed are kept (a wrong key is looked up every time). Disabling a key through this
    process's ``/admin`` forgets them all at once; any other process stops accepting it within ``ttl_s``.
    """

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[tuple[str, str], tuple[float, ApiKey]] = {}

    def get(self, key: str, kind: str) -> ApiKey | None:
        entry = self._entries.get((hash_key(key), kind))
        if entry is None or time.monotonic() - entry[0] > self.ttl_s:
            return None
        return entry[1]

    def put(self, key: str, kind: str, row: ApiKey) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._entries) > 10_000:  # many keys: start afresh rather than grow
            self._entries.clear()
        self._entries[hash_key(key), kind] = (time.monotonic(), row)

    def clear(self) -> None:
        self._entries.clear()


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def set_key_enabled(session: Session, key_id: str, enabled: bool) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise InferenceError("No such key.", ErrorCode.NOT_FOUND, HTTPStatus.NOT_FOUND)
    row.enabled = enabled
    return row
