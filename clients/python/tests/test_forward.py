"""`ForwardTransport` and `AsyncForwardTransport` on `httpx.MockTransport`: every request
is re-addressed to the broker's forward route with the caller's credential only."""

from __future__ import annotations

import httpx
import pytest

from atlas_broker_client import AsyncForwardTransport, BrokerConfigError, ForwardTransport

KEY = "caller-key-" + "k" * 24
BROKER = "http://broker.test:8080"


def _recorder(seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    return httpx.MockTransport(handle)


def test_request_goes_to_the_forward_route_with_path_query_and_body() -> None:
    """Path and query follow `/v1/realms/{realm}/forward/`; method and body are kept."""
    seen: list[httpx.Request] = []
    transport = ForwardTransport(BROKER, "acme", api_key=KEY, transport=_recorder(seen))
    with httpx.Client(base_url="https://atlas.invalid", transport=transport) as client:
        client.post("/api/v1/orders", params={"n": "1 2"}, content=b"body")

    (request,) = seen
    assert (
        "POST",
        f"{BROKER}/v1/realms/acme/forward/api/v1/orders?n=1+2",
        b"body",
        "broker.test:8080",
    ) == (request.method, str(request.url), request.content, request.headers["host"])


def test_own_authorization_is_replaced_by_the_caller_key() -> None:
    """A request's own Authorization never leaves: the broker credential goes instead."""
    seen: list[httpx.Request] = []
    transport = ForwardTransport(BROKER, "acme", api_key=KEY, transport=_recorder(seen))
    with httpx.Client(transport=transport) as client:
        client.get("https://atlas.invalid/x", headers={"Authorization": "Bearer stale-token"})

    assert [f"Bearer {KEY}"] == seen[0].headers.get_list("authorization")


async def test_async_transport_forwards_the_same_way() -> None:
    """The async transport re-addresses requests as the sync one does."""
    seen: list[httpx.Request] = []
    transport = AsyncForwardTransport(BROKER, "acme", api_key=KEY, transport=_recorder(seen))
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("https://atlas.invalid/api/v1/me")

    assert f"{BROKER}/v1/realms/acme/forward/api/v1/me" == str(seen[0].url)


def test_bad_realm_is_refused_before_any_request() -> None:
    """A realm name the broker would refuse is a configuration error at construction."""
    with pytest.raises(BrokerConfigError):
        ForwardTransport(BROKER, "../admin", api_key=KEY)
