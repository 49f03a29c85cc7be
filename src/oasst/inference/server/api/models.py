"""``GET /models``: models a user can chat with (configured or served right now), with their presets."""

from __future__ import annotations

from fastapi import APIRouter

from oasst.inference.protocol import ModelInfo, ModelPreset
from oasst.inference.server.api.deps import CurrentUser, RuntimeDep

router = APIRouter(tags=["models"])


@router.get("/models")
async def list_models(_: CurrentUser, rt: RuntimeDep) -> list[ModelInfo]:
    served = await rt.served_models()
    names = sorted(set(served) | rt.settings.configured_models)
    return [
        ModelInfo(
            name=name,
            presets=[ModelPreset(name=p, sampling=v) for p, v in rt.settings.presets_for(name).items()],
            workers=served.get(name, {}).get("workers", 0),
            context_length=served.get(name, {}).get("context_length", 0),
        )
        for name in names
    ]
