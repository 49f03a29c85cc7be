"""``WS /workers/ws``: where workers connect (see :mod:`oasst.inference.server.gateway`)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from oasst.inference.server.gateway import serve_worker

router = APIRouter(tags=["workers"])


@router.websocket("/workers/ws")
async def worker_socket(websocket: WebSocket) -> None:
    await serve_worker(websocket, websocket.app.state.runtime)
