"""`BrokerClient` on `httpx.MockTransport`: each broker answer becomes its value or the most
specific error, secrets never reach a message, and the SDK imports nothing of the server."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest

from atlas_broker_client import (
    BrokerClient,
    BrokerClientError,
    BrokerConfigError,
    BrokerDenied,
    BrokerInvalidRequest,
    BrokerResponseError,
    BrokerUnreachable,
    BrokerUpstreamError,
)

KEY = "caller-key-" + "k" * 24
BROKER = "http://broker.test"
Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler) -> BrokerClient:
    return BrokerClient(
        BROKER, api_key=KEY, client=httpx.Client(transport=httpx.MockTransport(handler))
    )


def problem(status: int, detail: str = "no") -> httpx.Response:
    body = {"type": "about:blank", "title": "t", "status": status, "detail": detail}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


def test_token_answer_becomes_a_broker_token() -> None:
    """A 200 token answer is a BrokerToken; min_ttl and the caller's key were sent."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"access_token": "tok", "token_type": "Bearer", "expires_in": 300}
        )

    token = client(handler).token("acme", min_ttl=120)

    assert ("tok", 300, "acme") == (token.access_token, token.expires_in, token.realm)
    assert "/v1/realms/acme/token?min_ttl=120" == str(seen[0].url).removeprefix(BROKER)
    assert f"Bearer {KEY}" == seen[0].headers["authorization"]
    assert seen[0].headers["user-agent"].startswith("atlas-broker-client/")


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (problem(401), BrokerDenied),
        (problem(403), BrokerDenied),
        (problem(404), BrokerDenied),
        (problem(400), BrokerInvalidRequest),
        (problem(422), BrokerInvalidRequest),
        (problem(502), BrokerUpstreamError),
        (problem(503), BrokerUpstreamError),
        (httpx.Response(503, text="upstream connect error"), BrokerUnreachable),
        (problem(429), BrokerResponseError),
        (problem(500), BrokerResponseError),
    ],
)
def test_each_answer_raises_its_error(
    answer: httpx.Response, error: type[BrokerClientError]
) -> None:
    """Every status maps to one class of the tree (a proxy's 503 is 'unreachable')."""
    with pytest.raises(BrokerClientError) as raised:
        client(lambda _: answer).realms()

    assert error is type(raised.value)


def test_connection_failure_is_unreachable() -> None:
    """No answer at all is BrokerUnreachable, naming only the exception's type."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(BrokerUnreachable, match=r"\(ConnectError\)$"):
        client(handler).rotate("acme")


def test_key_echoed_in_an_answer_never_reaches_the_message() -> None:
    """Text quoted from an answer has the caller's key scrubbed out."""
    with pytest.raises(BrokerDenied) as raised:
        client(lambda _: problem(401, f"unknown key {KEY}")).evict("acme")

    assert KEY not in str(raised.value)
    assert "[redacted]" in str(raised.value)


def test_malformed_realm_is_refused_before_any_request() -> None:
    """A realm the broker would refuse never leaves the process."""
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(204)

    with pytest.raises(BrokerConfigError):
        client(handler).evict("../admin")

    assert [] == sent


def test_rotate_posts_and_returns_the_status() -> None:
    """rotate is a POST to the realm's rotate route; the answer is the realm's status."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert ("POST", "/v1/realms/acme/rotate") == (request.method, request.url.path)
        body = {"realm": "acme", "cached": True, "credential_version": 4, "last_error": None}
        return httpx.Response(200, json=body)

    status = client(handler).rotate("acme")

    assert ("acme", True, 4) == (status.realm, status.cached, status.credential_version)


def test_evict_is_a_delete_answered_204() -> None:
    """evict is DELETE on the realm's token; the broker's 204 means done."""
    methods: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        methods.append(f"{request.method} {request.url.path}")
        return httpx.Response(204)

    client(handler).evict("acme")

    assert ["DELETE /v1/realms/acme/token"] == methods


def test_audit_events_follow_cursors_until_enough() -> None:
    """audit_events reads page after page and stops at `wanted` events."""
    pages = {
        None: {"events": [{"id": "1"}, {"id": "2"}], "next_cursor": "c2"},
        "c2": {"events": [{"id": "3"}, {"id": "4"}], "next_cursor": "c3"},
        "c3": {"events": [{"id": "5"}], "next_cursor": None},
    }
    asked: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(dict(request.url.params))
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    events = list(client(handler).audit_events(wanted=3, page_size=2, realm="acme"))

    assert ["1", "2", "3"] == [event["id"] for event in events]
    assert [
        {"realm": "acme", "limit": "2"},
        {"realm": "acme", "limit": "1", "cursor": "c2"},
    ] == asked


def test_credentials_in_the_broker_url_are_refused() -> None:
    """A URL with user info is refused: credentials go in the Authorization header only."""
    with pytest.raises(BrokerConfigError):
        BrokerClient("http://user:pass@broker.test", api_key=KEY)


def test_the_sdk_imports_nothing_of_the_server() -> None:
    """Importing the SDK loads no `broker` module, nor FastAPI, hvac or redis."""
    code = (
        "import json, sys, atlas_broker_client\n"
        "roots = {name.split('.')[0] for name in sys.modules}\n"
        "print(json.dumps(sorted(roots & {'broker', 'fastapi', 'hvac', 'redis', 'starlette'})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )

    assert [] == json.loads(done.stdout)
