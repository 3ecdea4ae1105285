"""`HeldHeadTransport`: a response head that announces a body goes out with the body's
first bytes, in one write; anything else is written as it comes."""

from __future__ import annotations

import asyncio
from typing import cast

from broker.http.held_head import HeldHeadTransport

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def writelines(self, data: tuple[bytes, ...]) -> None:
        self.writes.append(b"".join(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def held(method: str = "GET") -> tuple[HeldHeadTransport, RecordingTransport]:
    inner = RecordingTransport()
    return HeldHeadTransport(cast(asyncio.Transport, inner), method=method), inner


def test_head_and_body_go_out_in_one_write() -> None:
    transport, inner = held()
    transport.write(HEAD)
    assert [] == inner.writes
    transport.write(b"{}")
    assert [HEAD + b"{}"] == inner.writes


def test_only_the_first_head_is_held() -> None:
    transport, inner = held()
    transport.write(HEAD)
    transport.write(b"{}")
    transport.write(b"more")
    assert [HEAD + b"{}", b"more"] == inner.writes


def test_a_head_without_a_body_is_written_at_once() -> None:
    for head in (
        b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
    ):
        transport, inner = held()
        transport.write(head)
        assert [head] == inner.writes


def test_the_answer_to_a_head_request_is_written_at_once() -> None:
    transport, inner = held("HEAD")
    transport.write(HEAD)
    assert [HEAD] == inner.writes


def test_closing_writes_a_held_head_first() -> None:
    """An app that fails after its response's start: the client gets the head, then the
    connection closes, as without holding."""
    transport, inner = held()
    transport.write(HEAD)
    transport.close()
    assert ([HEAD], True) == (inner.writes, inner.closed)


def test_everything_else_is_the_transports() -> None:
    transport, inner = held()
    assert transport.is_closing() is False
    inner.closed = True
    assert transport.is_closing() is True
