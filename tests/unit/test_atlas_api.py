"""The Atlas API client (`HttpxApiClient`) against a scripted HTTP/1.1 server on
loopback: what goes on the wire, how answers are read (length, chunked, until close,
HEAD, 1xx), when a connection is used again, and which broker error a failure becomes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from broker.adapters.atlas_api import HttpxApiClient, create_api_client
from broker.core.errors import ApiTimeout, ApiUnreachable
from broker.core.models import ApiRequest, ApiResponse

Reply = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"


class ScriptedServer:
    """Reads each request's head (and a body it declares by length) and lets `reply`
    answer; `reply` returning False closes the connection. Keeps the heads it read."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.connections = 0
        self.url = ""
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = _content_length(head)
                self.bodies.append(await reader.readexactly(length) if length else b"")
                if not await self.reply(head, reader, writer):
                    break
                await writer.drain()
        writer.close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def answering(*replies: bytes, keep_open: bool = True) -> Reply:
    """Each request gets the next of `replies` (the last repeats)."""
    queue = list(replies)

    async def reply(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        writer.write(queue.pop(0) if len(queue) > 1 else queue[0])
        return keep_open

    return reply


async def _read(response: ApiResponse) -> bytes:
    try:
        return b"".join([chunk async for chunk in response.body])
    finally:
        await response.aclose()


@contextlib.asynccontextmanager
async def _client(limit: float = 5.0) -> AsyncIterator[HttpxApiClient]:
    client = HttpxApiClient(create_api_client(timeout=limit))
    try:
        yield client
    finally:
        await client.aclose()


async def test_a_request_goes_out_with_host_its_headers_and_a_buffered_body() -> None:
    async with ScriptedServer(answering(OK)) as server:
        request = ApiRequest(
            "POST", f"{server.url}/base/a%2Fb?x=1&y=%20", [("x-team", "ledger")], b"payload"
        )
        async with _client() as client:
            response = await client.send(request)
            assert (response.status, await _read(response)) == (200, b"hello")
    port = server.url.rsplit(":", 1)[1]
    assert server.heads == [
        b"POST /base/a%2Fb?x=1&y=%20 HTTP/1.1\r\nhost: 127.0.0.1:" + port.encode() + b"\r\n"
        b"content-length: 7\r\nx-team: ledger\r\n\r\n"
    ]
    assert server.bodies == [b"payload"]


async def test_a_streamed_body_without_a_length_goes_chunked() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b""
        yield b"defgh"

    async def reply(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        sent = await reader.readuntil(b"0\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(sent), sent))
        return True

    async with ScriptedServer(reply) as server, _client() as client:
        response = await client.send(ApiRequest("PUT", f"{server.url}/up", [], body()))
        assert await _read(response) == b"3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n"
    assert b"transfer-encoding: chunked\r\n" in server.heads[0]


async def test_a_streamed_body_shorter_than_its_length_fails_as_unreachable() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"abc"

    async with ScriptedServer(answering(OK)) as server:
        request = ApiRequest("PUT", f"{server.url}/up", [("content-length", "10")], body())
        async with _client(limit=1) as client:
            with pytest.raises(ApiUnreachable):
                await client.send(request)


async def test_a_chunked_answer_comes_back_whole() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    async with ScriptedServer(answering(chunked)) as server, _client() as client:
        for _ in range(2):
            response = await client.send(ApiRequest("GET", f"{server.url}/", [], None))
            assert await _read(response) == b"abcde"
    assert server.connections == 1


async def test_an_answer_delimited_by_the_connections_end_is_read_to_the_end() -> None:
    until_close = answering(b"HTTP/1.1 200 OK\r\n\r\nuntil close", keep_open=False)
    async with ScriptedServer(until_close) as server, _client() as client:
        for _ in range(2):
            response = await client.send(ApiRequest("GET", f"{server.url}/", [], None))
            assert await _read(response) == b"until close"
    assert server.connections == 2


async def test_an_answer_to_head_ends_with_its_headers() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n"
    async with ScriptedServer(answering(head)) as server, _client(limit=2) as client:
        response = await client.send(ApiRequest("HEAD", f"{server.url}/", [], None))
        assert response.status == 200
        assert ("content-length", "1234") in response.headers
        assert await _read(response) == b""


async def test_an_interim_answer_is_skipped() -> None:
    early = b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n" + OK
    async with ScriptedServer(answering(early)) as server, _client() as client:
        response = await client.send(ApiRequest("GET", f"{server.url}/", [], None))
        assert (response.status, response.headers) == (200, [("content-length", "5")])
        assert await _read(response) == b"hello"


async def test_a_connection_is_used_again_only_after_its_answer_ended() -> None:
    partial = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello"
    async with ScriptedServer(answering(partial, OK)) as server, _client() as client:
        unfinished = await client.send(ApiRequest("GET", f"{server.url}/", [], None))
        await unfinished.aclose()
        for _ in range(2):
            await _read(await client.send(ApiRequest("GET", f"{server.url}/", [], None)))
    assert server.connections == 2


async def test_a_connection_the_server_closed_while_idle_is_not_used_again() -> None:
    async with ScriptedServer(answering(OK, keep_open=False)) as server, _client() as client:
        await _read(await client.send(ApiRequest("GET", f"{server.url}/", [], None)))
        await asyncio.sleep(0.05)  # the server's close arrives
        response = await client.send(ApiRequest("GET", f"{server.url}/", [], None))
        assert await _read(response) == b"hello"
    assert server.connections == 2


async def test_an_answer_that_never_comes_is_a_timeout() -> None:
    async def silent(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        await asyncio.sleep(5)
        return False

    async with ScriptedServer(silent) as server, _client(limit=0.2) as client:
        with pytest.raises(ApiTimeout):
            await client.send(ApiRequest("GET", f"{server.url}/", [], None))


async def test_a_garbled_answer_and_a_closed_port_are_unreachable() -> None:
    async with ScriptedServer(answering(b"SPDY/9 what\r\n\r\n")) as server, _client() as client:
        with pytest.raises(ApiUnreachable):
            await client.send(ApiRequest("GET", f"{server.url}/", [], None))
    async with _client() as client:
        with pytest.raises(ApiUnreachable):
            await client.send(ApiRequest("GET", server.url + "/", [], None))


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/a\r\nx-injected: 1", []),
        ("/", [("x-a", "1\r\nx-injected: 1")]),
        ("/", [("x a", "1")]),
    ],
)
async def test_a_request_that_would_split_is_refused_with_nothing_sent(
    target: str, headers: list[tuple[str, str]]
) -> None:
    async with ScriptedServer(answering(OK)) as server, _client() as client:
        with pytest.raises(ApiUnreachable):
            await client.send(ApiRequest("GET", server.url + target, headers, None))
    assert server.heads == []


async def test_a_space_in_the_target_is_sent_percent_encoded() -> None:
    async with ScriptedServer(answering(OK)) as server, _client() as client:
        await _read(await client.send(ApiRequest("GET", server.url + "/a b", [], None)))
    assert server.heads[0].startswith(b"GET /a%20b HTTP/1.1\r\n")


async def test_only_http_and_https_are_spoken() -> None:
    async with ScriptedServer(answering(OK)) as server, _client() as client:
        with pytest.raises(ApiUnreachable):
            await client.send(ApiRequest("GET", server.url.replace("http:", "ftp:"), [], None))
    assert server.heads == []
