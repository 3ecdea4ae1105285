"""The listener: uvicorn with the limits enforced by the HTTP parser actually in use.

uvicorn's httptools protocol (what `uvicorn[standard]` selects) buffers a request's head
without bound and waits for it forever: one connection streaming an endless header grows
the process by its size, and a client trickling a byte a second holds a connection for
good. `LimitedHttpToolsProtocol` closes both holes where the bytes arrive:

- the head (request line and headers) may be at most `max_header_bytes`: past that, while
  it is still arriving, the answer is 431 and the connection is closed, so at most one
  read (256 KiB) beyond the limit is ever held;
- the head must be complete within `header_timeout` seconds of the connection opening (or
  of the next request's first byte on a kept-alive connection): else 408 and closed;
- at most `max_connections` connections are open at once: one more is answered 503 and
  closed at once, before it is read, instead of waiting in line.

A completed head that is too large and a body that is too large are the
`RequestContextMiddleware`'s (431 / 413 problem+json, with the request id).

TLS (`BROKER_TLS_CERT_FILE` / `BROKER_TLS_KEY_FILE`) is served from one `SSLContext` whose
certificate is loaded again when the files change (cert-manager rotates them in place):
checked at most once a second, when a connection arrives. With `BROKER_TLS_CLIENT_CA_FILE`
the context asks for a client certificate and verifies it against that CA during the
handshake (an expired one, or one from another CA, fails the handshake); a verified
certificate reaches the app as the ASGI TLS extension's `client_cert_chain`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from asyncio.events import TimerHandle
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState
from uvicorn.supervisors.multiprocess import Multiprocess

from broker.http.held_head import HeldHeadTransport
from broker.http.tls import CertificateReloader, TlsFiles, peer_certificate, tls_context
from broker.settings import Settings

log = logging.getLogger(__name__)

_PROBLEM_BASE = "https://atlas-broker.dev/problems/"
_STARTUP_FAILURE = 3


@dataclass(frozen=True, slots=True)
class RequestLimits:
    max_header_bytes: int = 16384
    header_timeout: float = 10.0
    max_connections: int = 1000


class BrokerConfig(uvicorn.Config):
    """uvicorn's configuration plus the broker's limits and TLS files (picklable, so each
    worker process rebuilds its own TLS context)."""

    def __init__(
        self, app: str, *, limits: RequestLimits, tls: TlsFiles | None, **kwargs: Any
    ) -> None:
        self.limits = limits
        self.tls = tls
        self.tls_reloader: CertificateReloader | None = None
        super().__init__(
            app,
            http=LimitedHttpToolsProtocol,
            ssl_context_factory=_context_factory if tls is not None else None,
            **kwargs,
        )


def _context_factory(config: uvicorn.Config, default: Any) -> ssl.SSLContext:
    assert isinstance(config, BrokerConfig)
    assert config.tls is not None
    context = tls_context(config.tls)
    config.tls_reloader = CertificateReloader(context, config.tls)
    return context


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded, timed request head and a connection
    cap (see the module docstring)."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        broker_config = config if isinstance(config, BrokerConfig) else None
        self.limits = broker_config.limits if broker_config else RequestLimits()
        self._reloader = broker_config.tls_reloader if broker_config else None
        self._head_bytes = 0
        self._reading_head = True
        self._head_timer: TimerHandle | None = None
        self._answered = False
        self._client_cert: list[str] = []

    # -- connection -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if self._reloader is not None:
            self._reloader.check()
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._answer(503, "too-many-connections", "the broker is at its connection limit")
            return
        self._client_cert = peer_certificate(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return  # refused: whatever else arrives is dropped
        if self._reading_head:
            if self._head_timer is None:
                self._arm_head_timer()  # the first byte of a kept-alive connection's next request
            self._head_bytes += len(data)
        super().data_received(data)
        if self._reading_head and self._head_bytes > self.limits.max_header_bytes:
            self._answer(
                431,
                "request-header-fields-too-large",
                f"request headers exceed {self.limits.max_header_bytes} bytes",
            )

    def send_400_response(self, msg: str) -> None:
        if not self._answered:
            self._answered = True
            super().send_400_response(msg)

    # -- one request ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._client_cert:
            # The ASGI TLS extension (asgiref's specs/tls.html).
            self.scope["extensions"] = {"tls": {"client_cert_chain": self._client_cert}}

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._disarm_head_timer()
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not previous:  # a new request: its response in one write
            self.cycle.transport = HeldHeadTransport(  # type: ignore[assignment]
                self.transport, method=self.scope["method"]
            )

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # The request is in whole: whatever comes next is the next request's head (its
        # timer starts with its first byte, not now: the response may take a while).
        self._reading_head = True
        self._head_bytes = 0

    # -- refusals ---------------------------------------------------------------------

    def _responding(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._responding():
            self._arm_head_timer()  # a pipelined head: judged once the response is out
            return
        if not self.transport.is_closing() and self._reading_head:
            self._answer(
                408,
                "request-timeout",
                f"request headers not received within {self.limits.header_timeout:g} s",
            )

    def _answer(self, status: int, slug: str, detail: str) -> None:
        """Write a problem+json answer ourselves (no app is involved) and close; while a
        response is being written (a pipelined request) only close."""
        self._answered = True
        self._disarm_head_timer()
        if self.transport.is_closing():
            return
        if self._responding():
            self.transport.close()
            return
        body = json.dumps(
            {"type": _PROBLEM_BASE + slug, "title": detail, "status": status, "detail": detail}
        ).encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
            "content-type: application/problem+json\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        ).encode()
        self.transport.write(head + body)
        self.transport.close()


_REASONS = {
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def build_config(settings: Settings) -> BrokerConfig:
    tls = None
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        tls = TlsFiles(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
    return BrokerConfig(
        "broker.http.app:app_from_environment",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,  # keep our JSON logging
        access_log=False,  # the broker writes its own (broker.http.metrics.AccessMiddleware)
        proxy_headers=False,  # the source address is the middleware's (trusted proxies)
        server_header=False,
        timeout_graceful_shutdown=20,
        limits=RequestLimits(
            max_header_bytes=settings.max_header_bytes,
            header_timeout=settings.header_timeout,
            max_connections=settings.max_connections,
        ),
        tls=tls,
    )


def serve(settings: Settings) -> int:
    """Run the broker's listener until it is stopped; the process exit code."""
    config = build_config(settings)
    server = uvicorn.Server(config)
    if config.workers > 1:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return 0
    server.run()
    return 0 if server.started else _STARTUP_FAILURE
