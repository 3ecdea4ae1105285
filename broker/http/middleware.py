"""ASGI middleware: request ids and a limit on header size, as raw ASGI for speed."""

from __future__ import annotations

import json
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.logs import bind_log_context

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    """Every response carries `X-Request-ID`: the caller's when well-formed, else a new one.

    Oversized headers are refused with 431 before any route runs.
    """

    def __init__(self, app: ASGIApp, *, max_header_bytes: int) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        size = 0
        for name, value in scope["headers"]:
            size += len(name) + len(value)
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _REQUEST_ID.match(candidate):
                    request_id = candidate
        request_id = request_id or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        bind_log_context(request_id=request_id)
        header = (b"x-request-id", request_id.encode())

        if size > self.max_header_bytes:
            await _too_large(send, header, request_id, self.max_header_bytes)
            return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


async def _too_large(send: Send, header: tuple[bytes, bytes], request_id: str, limit: int) -> None:
    body = json.dumps(
        {
            "type": "https://atlas-broker.dev/problems/request-header-fields-too-large",
            "title": "Request header fields too large",
            "status": 431,
            "detail": f"request headers exceed {limit} bytes",
            "request_id": request_id,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 431,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                header,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
