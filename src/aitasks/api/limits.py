"""Rejects request bodies over the size limit with 413 before they are read into memory."""

from __future__ import annotations

from typing import Any

import orjson
from aitasks.errors import FieldError, PayloadTooLarge
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(PayloadTooLarge):
    """Raised while a body is read, once it passes the limit; answered 413 wherever it surfaces."""


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._reject(send)
                    return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(f"request body is over the limit of {self.max_bytes} bytes",
                                       [FieldError("body", f"over the limit of {self.max_bytes} bytes")])
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body: dict[str, Any] = {
            "error": f"request body is over the limit of {self.max_bytes} bytes",
            "code": "payload_too_large",
            "fields": [{"field": "body", "message": f"over the limit of {self.max_bytes} bytes"}],
        }
        payload = orjson.dumps(body)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})
