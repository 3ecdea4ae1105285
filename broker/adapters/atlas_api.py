"""`HttpxApiClient`: the forward proxy's connection to the Atlas API.

Built on httpcore, the HTTP/1.1 layer under httpx, with a pool of its own: idle
keep-alive connections per origin kept last-in first-out, so taking one costs one
readiness check. httpcore's own pool checks every connection it holds on each request
and each response's end (a system call apiece), which under concurrent load cost more
than the forwarded call itself; httpx's client layer (URL merging, auth, redirects,
cookies) has nothing to do for a proxy that passes requests through as they are.

The body is passed through undecoded, redirects go back to the caller as they are
(following one could leave the API), no cookie is kept between calls, nothing is taken
from the environment (proxy, .netrc). httpcore's exceptions are translated here into
the broker's (`ApiTimeout` 504, `ApiUnreachable` 502), with the cause chained.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from dataclasses import dataclass, field

import h11
import httpcore
import httpx

from broker.core.errors import ApiTimeout, ApiUnreachable
from broker.core.models import ApiRequest, ApiResponse

_Origin = tuple[bytes, bytes, int]


@dataclass
class ApiConnections:
    """The pool's settings and state: idle connections by origin, a bound on all."""

    timeout: float
    max_connections: int
    max_idle_per_origin: int
    keepalive_expiry: float
    slots: asyncio.Semaphore = field(init=False)
    idle: dict[_Origin, list[httpcore.AsyncHTTPConnection]] = field(default_factory=dict)
    closed: bool = False

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.max_connections)

    @functools.cached_property
    def ssl_context(self) -> ssl.SSLContext:
        """certifi's CA bundle (nothing from the environment), made when the first
        forwarded call opens a connection: a broker nobody forwards through never holds
        it (~0.8 MiB)."""
        return httpx.create_ssl_context(trust_env=False)


def create_api_client(
    *, timeout: float, max_connections: int = 200, max_idle_per_origin: int = 50
) -> ApiConnections:
    return ApiConnections(
        timeout=timeout,
        max_connections=max_connections,
        max_idle_per_origin=max_idle_per_origin,
        keepalive_expiry=30.0,
    )


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except (httpcore.TimeoutException, TimeoutError) as exc:
        raise ApiTimeout("the Atlas API did not answer in time") from exc
    except (
        httpcore.NetworkError,
        httpcore.ProtocolError,
        httpcore.UnsupportedProtocol,
        # A streamed body that ends short of its Content-Length: h11 refuses to end the
        # request, and httpcore lets its error through unwrapped.
        h11.ProtocolError,
        httpx.InvalidURL,
        OSError,
    ) as exc:
        raise ApiUnreachable(f"the Atlas API cannot be reached ({type(exc).__name__})") from exc


class HttpxApiClient:
    def __init__(self, pool: ApiConnections) -> None:
        self._pool = pool
        self._timeouts = {
            "connect": pool.timeout,
            "read": pool.timeout,
            "write": pool.timeout,
            "pool": pool.timeout,
        }

    async def send(self, request: ApiRequest) -> ApiResponse:
        with _mapped():
            # httpx's URL rules (normalisation, validation), as a client built on it had.
            url = httpx.URL(request.url)
            if url.scheme not in ("http", "https"):
                raise httpcore.UnsupportedProtocol(f"scheme {url.scheme!r} is not forwarded")
            origin: _Origin = (url.raw_scheme, url.raw_host, url.port or _default_port(url))
            outgoing = httpcore.Request(
                request.method,
                httpcore.URL(scheme=origin[0], host=origin[1], port=origin[2], target=url.raw_path),
                headers=_wire_headers(request, url),
                content=request.body if request.body is not None else b"",
                extensions={"timeout": self._timeouts},
            )
            async with asyncio.timeout(self._pool.timeout):
                await self._pool.slots.acquire()
        try:
            connection = self._connection(origin)
            with _mapped():
                response = await connection.handle_async_request(outgoing)
        except BaseException:
            self._pool.slots.release()
            raise
        return self._answer(origin, connection, response)

    def _connection(self, origin: _Origin) -> httpcore.AsyncHTTPConnection:
        """The most recently used idle connection that is still open, or a new one."""
        idle = self._pool.idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.is_available() and not connection.has_expired():
                return connection
            _discard(connection)
        scheme, host, port = origin
        return httpcore.AsyncHTTPConnection(
            httpcore.Origin(scheme, host, port),
            ssl_context=self._pool.ssl_context,
            keepalive_expiry=self._pool.keepalive_expiry,
        )

    def _answer(
        self, origin: _Origin, connection: httpcore.AsyncHTTPConnection, response: httpcore.Response
    ) -> ApiResponse:
        stream = response.stream
        assert isinstance(stream, AsyncIterable)  # an async connection's body
        released = False

        async def body() -> AsyncIterator[bytes]:
            with _mapped():
                async for chunk in stream:
                    yield chunk

        async def aclose() -> None:
            nonlocal released
            if released:
                return
            released = True
            try:
                await response.aclose()  # keeps the connection open only if fully read
            finally:
                self._pool.slots.release()
                self._keep(origin, connection)

        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in response.headers]
        return ApiResponse(status=response.status, headers=headers, body=body(), aclose=aclose)

    def _keep(self, origin: _Origin, connection: httpcore.AsyncHTTPConnection) -> None:
        idle = self._pool.idle.setdefault(origin, [])
        if (
            self._pool.closed
            or not connection.is_idle()
            or len(idle) >= self._pool.max_idle_per_origin
        ):
            _discard(connection)
        else:
            idle.append(connection)

    async def aclose(self) -> None:
        self._pool.closed = True
        idle = [c for connections in self._pool.idle.values() for c in connections]
        self._pool.idle.clear()
        for connection in idle:
            await connection.aclose()


def _discard(connection: httpcore.AsyncHTTPConnection) -> None:
    """Close a connection no longer wanted, without waiting (a plain socket close)."""
    with contextlib.suppress(Exception):
        task = asyncio.get_running_loop().create_task(connection.aclose())
        _closing.add(task)
        task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[None]] = set()


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80


def _wire_headers(request: ApiRequest, url: httpx.URL) -> list[tuple[bytes, bytes]]:
    """The request's headers with Host and the body's framing, as httpx adds them."""
    headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in request.headers]
    framed = any(n.lower() in (b"content-length", b"transfer-encoding") for n, _ in headers)
    added: list[tuple[bytes, bytes]] = [(b"host", url.netloc)]
    if isinstance(request.body, bytes) and request.body:
        added.append((b"content-length", str(len(request.body)).encode()))
    elif request.body is not None and not isinstance(request.body, bytes) and not framed:
        added.append((b"transfer-encoding", b"chunked"))
    elif not framed and request.method in ("POST", "PUT", "PATCH"):
        added.append((b"content-length", b"0"))
    return added + headers
