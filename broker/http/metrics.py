"""HTTP metrics: the request-duration middleware and the optional metrics listener.

With `BROKER_METRICS_PORT` set, `/metrics` is served on its own port (and no longer on the
main one), so a NetworkPolicy can let the scraper reach the realm names in the labels and
keep callers away from them. Every worker binds that port with SO_REUSEPORT, as they
share the main port, and any of them answers a scrape with the merged totals.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.adapters.prometheus import OTHER, BrokerMetrics
from broker.http.server import LimitedHttpToolsProtocol
from broker.logs import AccessLog


class AccessMiddleware:
    """Times every HTTP request by its route template (never the raw path, which a
    client chooses) and its status class, and writes its access-log line.

    The line (logger `broker.access`, INFO) has the method, the path without its query
    string (a client may put anything there), the status, the duration and the source
    address; the request id, caller and realm come from the request's log context. It
    replaces uvicorn's own, which costs more and knows neither the duration nor the source
    address behind trusted proxies.
    """

    def __init__(self, app: ASGIApp, *, metrics: BrokerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees when the app fails before answering

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            seconds = time.perf_counter() - started
            # Starlette's router leaves the matched route in the scope.
            route = getattr(scope.get("route"), "path", None) or OTHER
            self.metrics.observe_http(route, status, seconds)
            _log_access(scope, status, seconds)


access_log = AccessLog()


def _log_access(scope: Scope, status: int, seconds: float) -> None:
    access_log.write(
        f"{scope['method']} {scope['path']} {status}",
        {
            "client_ip": (scope.get("state") or {}).get("client_ip"),
            "duration_ms": round(seconds * 1000, 3),
            "status": status,
        },
    )


def metrics_app(metrics: BrokerMetrics) -> ASGIApp:
    """`GET /metrics` and nothing else."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD"):
            status, body, media = 200, metrics.render(), CONTENT_TYPE_LATEST
        else:
            status, body, media = 404, b"not found\n", "text/plain; charset=utf-8"
        headers = [(b"content-type", media.encode()), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server inside the broker's own: the main server owns the signals and
    stops this one from the lifespan."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # one per worker
    sock.bind((host, port))
    return sock


@contextlib.asynccontextmanager
async def metrics_listener(metrics: BrokerMetrics, *, host: str, port: int) -> AsyncIterator[None]:
    """Serve `/metrics` on `host:port` while the block runs."""
    config = uvicorn.Config(
        metrics_app(metrics),
        http=LimitedHttpToolsProtocol,  # the main listener's head size, head time, conn cap
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
    )
    server = _EmbeddedServer(config)
    sock = _listening_socket(host, port)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="metrics-listener")
    try:
        # uvicorn.Server sets a flag, not an event, once it listens.
        while not server.started and not task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if task.done():
            task.result()  # a failure to listen stops start-up with its cause
        yield
    finally:
        server.should_exit = True
        await task
        sock.close()
