"""A TCP proxy in front of a real Redis, in the test's event loop, that can make Redis
unreachable for its clients, or lose the reply to a script call Redis has applied.

Faults happen on the wire, so the adapter under test runs its real client and Redis
runs the real scripts: nothing re-implements them.
"""

from __future__ import annotations

import asyncio
import contextlib


class RedisProxy:
    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self.down = False
        self._lose_next_reply = False
        self.replies_lost = 0

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def start(self) -> RedisProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def aclose(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        """Drop every open connection (Redis itself keeps running)."""
        for writer in list(self._connections):
            writer.close()
        self._connections.clear()

    def go_down(self) -> None:
        """Redis is unreachable: connections are dropped, new ones closed at once."""
        self.down = True
        self.cut()

    def come_back(self) -> None:
        self.down = False

    def lose_next_reply(self) -> None:
        """The next script call reaches Redis and is applied, but its reply is lost with
        the connection, and Redis stays unreachable until `come_back`."""
        self._lose_next_reply = True

    async def _accept(self, client_in: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        if self.down:
            client.close()
            return
        server_in, server = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        self._connections.update((client, server))
        script_sent = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pipe(client_in, server, watch=script_sent))
                group.create_task(self._pipe(server_in, client, lose_after=script_sent))
        except* (ConnectionError, OSError):
            pass
        finally:
            for writer in (client, server):
                self._connections.discard(writer)
                writer.close()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        watch: asyncio.Event | None = None,
        lose_after: asyncio.Event | None = None,
    ) -> None:
        while data := await reader.read(65536):
            if lose_after is not None and lose_after.is_set():
                # The reply to the script call: dropped, and Redis "goes away".
                self.replies_lost += 1
                self.go_down()
                return
            if watch is not None and self._lose_next_reply and b"EVALSHA" in data.upper():
                self._lose_next_reply = False
                watch.set()
            writer.write(data)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        writer.close()
