"""httpx transports that send every request through the broker's forward proxy
(`/v1/realms/{realm}/forward/{path}`): the broker attaches the realm's token on the way
to the Atlas API, and the service never holds a token at all.

    client = httpx.Client(
        base_url="https://atlas.invalid",  # any: only the path and query are used
        transport=ForwardTransport("http://broker:8080", "acme", api_key=key),
    )
    client.get("/api/v1/accountreports")

The request's own `Authorization` is replaced by the caller's broker credential (the
broker drops it before the API); method, headers, body and query pass as they are, and
the API's answer comes back as it is (the broker's own refusals are problem+json).
"""

from __future__ import annotations

import os

import httpx

from atlas_broker_client._credential import Credential
from atlas_broker_client._wire import check_broker_url, check_realm, realm_url


class _Forwarding:
    def __init__(
        self,
        broker_url: str,
        realm: str,
        *,
        api_key: str | None,
        jwt_file: str | os.PathLike[str] | None,
    ) -> None:
        self._base = realm_url(check_broker_url(broker_url), check_realm(realm), "forward")
        self._credential = Credential(api_key, jwt_file)

    def rewrite(self, request: httpx.Request) -> httpx.Request:
        """The same request, addressed to the broker's forward route."""
        path_and_query = request.url.raw_path.decode("ascii").lstrip("/")
        headers = [
            (name, value)
            for name, value in request.headers.multi_items()
            if name.lower() not in ("host", "authorization")
        ]
        url = httpx.URL(f"{self._base}/{path_and_query}")
        # With a stream given, httpx leaves the headers as they are: Host is set here.
        headers.insert(0, ("host", url.netloc.decode("ascii")))
        headers.append(("authorization", f"Bearer {self._credential.read()}"))
        return httpx.Request(
            request.method,
            url,
            headers=headers,
            stream=request.stream,
            extensions=request.extensions,
        )


class ForwardTransport(httpx.BaseTransport):
    """A sync httpx transport through the broker's forward proxy for `realm`."""

    def __init__(
        self,
        broker_url: str,
        realm: str,
        *,
        api_key: str | None = None,
        jwt_file: str | os.PathLike[str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._forwarding = _Forwarding(broker_url, realm, api_key=api_key, jwt_file=jwt_file)
        self._transport = transport or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._transport.handle_request(self._forwarding.rewrite(request))

    def close(self) -> None:
        self._transport.close()


class AsyncForwardTransport(httpx.AsyncBaseTransport):
    """An async httpx transport through the broker's forward proxy for `realm`."""

    def __init__(
        self,
        broker_url: str,
        realm: str,
        *,
        api_key: str | None = None,
        jwt_file: str | os.PathLike[str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._forwarding = _Forwarding(broker_url, realm, api_key=api_key, jwt_file=jwt_file)
        self._transport = transport or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._transport.handle_async_request(self._forwarding.rewrite(request))

    async def aclose(self) -> None:
        await self._transport.aclose()
