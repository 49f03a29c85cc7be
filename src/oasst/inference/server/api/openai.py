"""``/v1``: OpenAI-compatible models and chat completions, for API keys (``Authorization: Bearer``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from oasst.inference.server import openai_compat as service
from oasst.inference.server.api.deps import ApiKeyDep, RuntimeDep
from oasst.inference.server.streams import EventStreamResponse

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models")
async def list_models(_: ApiKeyDep, rt: RuntimeDep) -> dict[str, Any]:
    served = await rt.served_models()
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "oasst"} for name in sorted(served)]
    return {"object": "list", "data": data}


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: service.ChatCompletionRequest, key: ApiKeyDep, rt: RuntimeDep
) -> JSONResponse | EventStreamResponse:
    ids = await service.submit(rt, key.id, body)
    if body.stream:
        return EventStreamResponse(service.stream(rt, body, ids))
    return JSONResponse(await service.complete(rt, body, ids))
