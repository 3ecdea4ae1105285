"""One write per small response instead of two.

uvicorn writes a response's head (status line and headers) as soon as the app sends
`http.response.start`, and its body with the next message: two system calls and, on a
kept-alive connection without Nagle's algorithm, two TCP segments for every response. The
transport a request's cycle writes to is wrapped so that a head announcing a body
(a non-zero Content-Length, not a HEAD request) is held until the body's first bytes and
goes out with them, in one write.

Whatever else is written (a `100 Continue`, a chunked response, a head without a body)
passes straight through, and closing the transport first writes a head still held.
"""

from __future__ import annotations

import asyncio
from typing import Any

_LENGTH = b"\r\ncontent-length: "
_NO_BODY = b"\r\ncontent-length: 0\r\n"
_HEAD_START = b"HTTP/1.1 "
_INTERIM = b"HTTP/1.1 1"


class HeldHeadTransport:
    def __init__(self, transport: asyncio.Transport, *, method: str) -> None:
        self._transport = transport
        self._may_hold = method != "HEAD"
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is not None:
            self._transport.writelines((self._held, data))
            self._held = None
        elif self._may_hold and _announces_body(data):
            self._may_hold = False  # one head per cycle
            self._held = data
        else:
            self._transport.write(data)

    def close(self) -> None:
        if self._held is not None:
            self._transport.write(self._held)
            self._held = None
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _announces_body(data: bytes) -> bool:
    return (
        data.startswith(_HEAD_START)
        and not data.startswith(_INTERIM)
        and _LENGTH in data
        and _NO_BODY not in data
    )
