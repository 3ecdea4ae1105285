"""ASGI middleware: request ids, the source address, limits on header and body size, as
raw ASGI for speed."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.core.audit import API_KEY_PREFIX
from broker.core.ids import new_id
from broker.http.problems import PROBLEM_MEDIA_TYPE, problem_json
from broker.logs import bind_log_context

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TITLES = {413: "Content too large", 431: "Request header fields too large"}

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class BodyTooLarge(Exception):
    """The request body grew past the limit while a route was reading it."""


class RequestContextMiddleware:
    """Every response carries `X-Request-ID`: the caller's when well-formed, else a new one.

    The request's source address (`scope["state"]["client_ip"]`, used by the audit trail)
    is the peer's, or, when the peer is a trusted proxy, the first address in
    `X-Forwarded-For` that is not one, read from the right (RFC 7239 §5.2: the left-hand
    entries are whatever the client chose to send).

    Oversized headers are refused with 431 and bodies past `max_body_bytes` with 413
    (declared: before any route runs; streamed: as soon as a route has read that much).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_header_bytes: int,
        max_body_bytes: int = 1 << 20,
        trusted_proxies: Sequence[IPNetwork] = (),
        body_limit: Callable[[str], int] | None = None,
    ) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        # A route's own body limit by path (the forward proxy's BROKER_FORWARD_MAX_BODY).
        self.body_limit = body_limit
        self.trusted_proxies = tuple(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        size = 0
        declared_body = 0
        forwarded: list[bytes] = []
        for name, value in scope["headers"]:
            size += len(name) + len(value)
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                # A broker API key (`atb_…`) pasted as a request id would be copied into
                # every log line and audit record of the request: never taken.
                if _REQUEST_ID.match(candidate) and not candidate.startswith(API_KEY_PREFIX):
                    request_id = candidate
            elif name == b"content-length" and value.isdigit():
                declared_body = int(value)
            elif name == b"x-forwarded-for":
                forwarded.append(value)
        request_id = request_id or new_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        client = scope.get("client")
        peer = client[0] if client else None
        state["client_ip"] = (
            source_address(peer, forwarded, self.trusted_proxies) if self.trusted_proxies else peer
        )
        bind_log_context(request_id=request_id)
        header = (b"x-request-id", request_id.encode())

        if size > self.max_header_bytes:
            await _refuse(
                send,
                header,
                request_id,
                431,
                "request-header-fields-too-large",
                f"request headers exceed {self.max_header_bytes} bytes",
            )
            return
        limit = self.body_limit(scope["path"]) if self.body_limit else self.max_body_bytes
        if declared_body > limit:
            await _refuse_body(send, header, request_id, limit)
            return

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, counted_receive, send_with_id)
        except BodyTooLarge:
            if not started:
                await _refuse_body(send, header, request_id, limit)


def source_address(
    peer: str | None, forwarded: Sequence[bytes], trusted: Sequence[IPNetwork]
) -> str | None:
    """The peer, or behind trusted proxies the right-most X-Forwarded-For hop that is not
    one of them (a malformed hop is where trust ends: the peer before it is reported)."""
    if peer is None or not _is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for value in forwarded for hop in value.decode("latin-1").split(",")]
    source = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break
        source = hop
        if not _is_trusted(hop, trusted):
            break
    return source


def _is_trusted(address: str, trusted: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


async def _refuse_body(
    send: Send, header: tuple[bytes, bytes], request_id: str, limit: int
) -> None:
    await _refuse(
        send, header, request_id, 413, "content-too-large", f"request body exceeds {limit} bytes"
    )


async def _refuse(
    send: Send, header: tuple[bytes, bytes], request_id: str, status: int, slug: str, detail: str
) -> None:
    body = problem_json(
        status=status, slug=slug, title=_TITLES[status], detail=detail, request_id=request_id
    )
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                header,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
