"""Request guards that apply to every route: body size and NUL characters.

PostgreSQL text cannot hold NUL (``\\x00``); rather than let such a value reach the database and
fail there, requests carrying one are refused up front with a clear 422, and bodies over the limit
with 413. Both use the usual ``{"message", "error_code"}`` body.
"""

from __future__ import annotations

import json
import re
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oasst.backend.errors import ErrorCode

# an escaped NUL in JSON: \u0000 preceded by an even number of backslashes
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


class RequestGuard:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int = 1_000_000) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"")
        if "\x00" in scope.get("path", "") or (b"%00" in query and b"\x00" in unquote_to_bytes(query)):
            await _refuse(send, 422, "Request parameters must not contain NUL characters.")
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            body.extend(message.get("body", b""))
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                await _refuse(send, 413, f"Request body over {self.max_body_bytes} bytes.")
                return
        if b"\x00" in body or _JSON_NUL.search(body):
            await _refuse(send, 422, "Request bodies must not contain NUL characters.")
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


async def _refuse(send: Send, status: int, message: str) -> None:
    payload = json.dumps(
        {"message": message, "error_code": int(ErrorCode.REQUEST_VALIDATION_FAILED)}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
