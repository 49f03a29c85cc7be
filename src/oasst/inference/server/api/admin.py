"""``/admin`` (root token): worker and API keys, connected worker sessions."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from oasst.inference.server.api.deps import DatabaseDep, RootDep, RuntimeDep
from oasst.inference.server.models import ApiKey
from oasst.inference.server.services import keys as service

router = APIRouter(prefix="/admin", tags=["admin"])


class CreateKey(BaseModel):
    kind: Literal["worker", "api"]
    name: str = Field(min_length=1, max_length=200)


class KeyRead(BaseModel):
    id: str
    name: str
    kind: str
    enabled: bool
    created_at: datetime


class CreatedKey(KeyRead):
    key: str  # shown once


class UpdateKey(BaseModel):
    enabled: bool


def _read(row: ApiKey) -> KeyRead:
    return KeyRead(id=row.id, name=row.name, kind=row.kind, enabled=row.enabled, created_at=row.created_at)


@router.post("/keys", status_code=201)
async def create_key(body: CreateKey, _: RootDep, db: DatabaseDep) -> CreatedKey:
    row, key = await db.awrite(lambda s: service.create_key(s, kind=body.kind, name=body.name))
    return CreatedKey(**_read(row).model_dump(), key=key)


@router.get("/keys")
async def list_keys(_: RootDep, db: DatabaseDep) -> list[KeyRead]:
    return [_read(r) for r in await db.aread(service.list_keys)]


@router.patch("/keys/{key_id}")
async def update_key(key_id: str, body: UpdateKey, _: RootDep, rt: RuntimeDep) -> KeyRead:
    row = await rt.db.awrite(lambda s: service.set_key_enabled(s, key_id, body.enabled))
    rt.verified_keys.clear()
    return _read(row)


@router.get("/workers")
async def list_workers(_: RootDep, rt: RuntimeDep) -> list[dict[str, Any]]:
    live, _dead = await rt.registry.sessions(alive_within=rt.settings.heartbeat_timeout_s)
    return [{"session_id": sid, **info} for sid, info in sorted(live.items())]
