"""`HttpxApiClient`: the forward proxy's connection to the Atlas API (httpx, pooled).

One client for the app's life (built in the lifespan, closed after it): keep-alive
connections are reused across forwarded calls. httpx's exceptions are translated here
into the broker's (`ApiTimeout` 504, `ApiUnreachable` 502), with the cause chained.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from broker.core.errors import ApiTimeout, ApiUnreachable
from broker.core.models import ApiRequest, ApiResponse


def create_api_client(*, timeout: float, max_connections: int = 200) -> httpx.AsyncClient:
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=50, keepalive_expiry=30
        ),
        # A redirect goes back to the caller as it is: following it could leave the API.
        follow_redirects=False,
        trust_env=False,  # no proxy or .netrc from the environment
        # No cookie jar: the API's Set-Cookie belongs to the caller that got it, and must
        # never ride along on another caller's request.
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )
    # httpx adds its own Accept, Accept-Encoding and User-Agent; the API should see the
    # caller's (an Accept-Encoding the caller did not send would give it a body it
    # cannot read, as bodies pass through undecoded).
    for name in ("accept", "accept-encoding", "user-agent"):
        del client.headers[name]
    return client


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as exc:
        raise ApiTimeout("the Atlas API did not answer in time") from exc
    except (httpx.TransportError, httpx.InvalidURL) as exc:
        raise ApiUnreachable(f"the Atlas API cannot be reached ({type(exc).__name__})") from exc


class HttpxApiClient:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def send(self, request: ApiRequest) -> ApiResponse:
        with _mapped():
            outgoing = self._client.build_request(
                request.method, request.url, headers=request.headers, content=request.body
            )
            response = await self._client.send(outgoing, stream=True)

        async def body() -> AsyncIterator[bytes]:
            with _mapped():
                async for chunk in response.aiter_raw():
                    yield chunk

        return ApiResponse(
            status=response.status_code,
            headers=list(response.headers.multi_items()),
            body=body(),
            aclose=response.aclose,
        )

    async def aclose(self) -> None:
        await self._client.aclose()
