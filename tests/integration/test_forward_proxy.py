"""The forward proxy end to end: a broker process forwarding to the Atlas API stand-in (a
real server verifying tokens against the development IdP's JWKS and echoing what it got)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
from forwarding import BASE_PATH, ForwardSetup, forward_setup, sha256

from atlas_broker_client import AsyncForwardTransport, ForwardTransport
from stack import Stack, bearer

TIMEOUT = 3  # BROKER_FORWARD_TIMEOUT of this module's broker


@pytest.fixture(scope="module")
def fwd(module_stack: Stack) -> Iterator[ForwardSetup]:
    with forward_setup(module_stack, BROKER_FORWARD_TIMEOUT=str(TIMEOUT)) as setup:
        yield setup


@pytest.fixture
def realm(fwd: ForwardSetup) -> str:
    return fwd.stack.new_realm("fwd").name


def _forward(
    fwd: ForwardSetup, method: str, realm: str, path: str, **kwargs: object
) -> httpx.Response:
    headers = {**bearer(fwd.stack.keys.everything), **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    return httpx.request(
        method, fwd.forward_url(realm, path), headers=headers, timeout=30, **kwargs
    )  # type: ignore[arg-type]


def test_get_keeps_path_query_headers_and_request_id(fwd: ForwardSetup, realm: str) -> None:
    """A GET reaches `{api_url}/{path}` with its query string, its ordinary headers and
    its request id, and the API's answer and cookies come back."""
    response = _forward(
        fwd,
        "GET",
        realm,
        "api/v1/accountreports?year=2026&q=a%20b",
        headers={"X-Team": "ledger", "X-Request-ID": "fwd-get-1", "Accept": "application/json"},
    )

    echo = response.json()
    headers = dict(echo["headers"])
    assert (
        200,
        f"{BASE_PATH}/api/v1/accountreports",
        "year=2026&q=a%20b",
        "ledger",
        "fwd-get-1",
        "application/json",
        ["standin=1; Path=/", "second=2; Path=/"],
        "fwd-get-1",
    ) == (
        response.status_code,
        echo["raw_path"],
        echo["query"],
        headers.get("x-team"),
        headers.get("x-request-id"),
        headers.get("accept"),
        response.headers.get_list("set-cookie"),
        response.headers.get("x-request-id"),
    )


def test_300_kb_post_body_arrives_intact(fwd: ForwardSetup, realm: str) -> None:
    """A 300 KB POST body reaches the API byte for byte, with its content type."""
    body = os.urandom(300 * 1024)

    response = _forward(
        fwd,
        "POST",
        realm,
        "api/v1/uploads?kind=bin",
        content=body,
        headers={"Content-Type": "application/octet-stream", "X-Request-ID": "fwd-post-1"},
    )

    echo = response.json()
    headers = dict(echo["headers"])
    assert (200, "POST", len(body), sha256(body), "application/octet-stream", "kind=bin") == (
        response.status_code,
        echo["method"],
        echo["body_length"],
        echo["body_sha256"],
        headers.get("content-type"),
        echo["query"],
    )


def test_streamed_body_larger_than_replay_limit_arrives_intact(
    fwd: ForwardSetup, realm: str
) -> None:
    """A 3 MiB chunked body (too large to buffer for a retry) is streamed through intact."""
    chunks = [os.urandom(256 * 1024) for _ in range(12)]

    response = _forward(fwd, "PUT", realm, "api/v1/blobs/1", content=iter(chunks))

    echo = response.json()
    assert (200, "PUT", 3 << 20, sha256(b"".join(chunks))) == (
        response.status_code,
        echo["method"],
        echo["body_length"],
        echo["body_sha256"],
    )


@pytest.mark.parametrize("method", ["HEAD", "PATCH", "DELETE"])
def test_other_methods_are_forwarded(fwd: ForwardSetup, realm: str, method: str) -> None:
    """HEAD, PATCH and DELETE reach the API as themselves."""
    before = fwd.api.requests()

    response = _forward(fwd, method, realm, "api/v1/items/7")

    assert (200, before + 1) == (response.status_code, fwd.api.requests())
    if method != "HEAD":
        assert method == response.json()["method"]


def test_caller_key_and_cookie_never_reach_the_api(fwd: ForwardSetup, realm: str) -> None:
    """The API sees the realm's token as Authorization, never the caller's key, its
    Proxy-Authorization or its cookies."""
    key = fwd.stack.keys.everything

    response = _forward(
        fwd,
        "GET",
        realm,
        "api/v1/me",
        headers={"Cookie": "session=caller-secret", "Proxy-Authorization": f"Basic {key}"},
    )

    echo = response.json()
    names = [name for name, _ in echo["headers"]]
    assert (200, False, False, False, False) == (
        response.status_code,
        key in response.text,
        "cookie" in names,
        "proxy-authorization" in names,
        sha256(key) == echo["token_sha256"],
    )


def test_token_never_reaches_the_caller(fwd: ForwardSetup, realm: str) -> None:
    """The caller's answer (headers and body) holds no trace of the token the API got."""
    response = _forward(fwd, "GET", realm, "api/v1/me")
    token = fwd.stack.get_token(fwd.broker.url, realm).json()["access_token"]

    seen = response.text + "".join(f"{k}: {v}\n" for k, v in response.headers.items())
    assert (sha256(token), False) == (response.json()["token_sha256"], token in seen)


def test_api_401_gets_one_fresh_token_and_one_retry(fwd: ForwardSetup, realm: str) -> None:
    """When the API refuses the token once, the broker fetches one fresh token and sends
    the request again: the caller gets the API's 200, made with the new token."""
    first = _forward(fwd, "GET", realm, "api/v1/me").json()["token_sha256"]
    api_before, idp_before = fwd.api.requests(), fwd.stack.idp_requests(realm)
    fwd.api.reject(1)

    response = _forward(fwd, "POST", realm, "api/v1/orders", content=b'{"n": 1}')

    assert (200, 2, 1, True, 8) == (
        response.status_code,
        fwd.api.requests() - api_before,
        fwd.stack.idp_requests(realm) - idp_before,
        response.json()["token_sha256"] != first,
        response.json()["body_length"],
    )


def test_every_forward_is_audited(fwd: ForwardSetup, realm: str) -> None:
    """Each forwarded call leaves an `api.forwarded` record: caller, realm, method, the
    path without its query, the status and the token's fingerprint."""
    response = _forward(
        fwd, "GET", realm, "api/v1/audited?secret-ish=1", headers={"X-Request-ID": "fwd-audit-1"}
    )

    events = [
        e
        for e in fwd.stack.audit_events(fwd.broker.process)
        if e["event"] == "api.forwarded" and e.get("request_id") == "fwd-audit-1"
    ]
    assert 200 == response.status_code
    assert [("svc-all", realm, "GET", "/api/v1/audited", 200, "success")] == [
        (e["caller"], e["realm"], e["method"], e["path"], e["status"], e["outcome"]) for e in events
    ]
    assert isinstance(events[0]["token_sha256"], str)
    assert "duration_ms" in events[0]


def test_realm_api_url_overrides_the_default(fwd: ForwardSetup) -> None:
    """A realm whose secret names its own api_url (at an allowed origin) is forwarded there."""
    realm = fwd.realm_with_api_url(fwd.api.url + "/own-base/")

    response = _forward(fwd, "GET", realm.name, "v2/x")

    assert (200, "/own-base/v2/x") == (response.status_code, response.json()["raw_path"])


def test_unreachable_api_is_a_502_problem(fwd: ForwardSetup) -> None:
    """An API nobody listens at gets 502 api-unreachable as problem+json."""
    realm = fwd.realm_with_api_url(fwd.dead_origin)

    response = _forward(fwd, "GET", realm.name, "v2/x")

    assert (502, "application/problem+json", "api-unreachable") == (
        response.status_code,
        response.headers["content-type"],
        response.json()["type"].rsplit("/", 1)[-1],
    )


def test_api_slower_than_the_timeout_is_a_504_problem(fwd: ForwardSetup, realm: str) -> None:
    """An API answering after BROKER_FORWARD_TIMEOUT gets 504 api-timeout."""
    response = _forward(fwd, "GET", realm, f"api/slow?s={TIMEOUT * 3}")

    assert (504, "api-timeout") == (
        response.status_code,
        response.json()["type"].rsplit("/", 1)[-1],
    )


@pytest.mark.parametrize(
    ("method", "below"), [("GET", ""), ("POST", "/api/v1/orders"), ("DELETE", "/x")]
)
def test_gateway_answers_an_allowed_caller_with_the_token_header(
    fwd: ForwardSetup, realm: str, method: str, below: str
) -> None:
    """The gateway route, for any method and any path below it, answers an allowed
    caller 200 with an empty body and the realm's token as `Authorization: Bearer`."""
    token = fwd.stack.get_token(fwd.broker.url, realm).json()["access_token"]

    response = httpx.request(
        method,
        f"{fwd.broker.url}/v1/realms/{realm}/gateway{below}",
        headers=bearer(fwd.stack.keys.everything),
        timeout=30,
    )

    assert (200, b"", f"Bearer {token}") == (
        response.status_code,
        response.content,
        response.headers.get("authorization"),
    )


def test_sdk_transport_sends_requests_through_the_forward_route(
    fwd: ForwardSetup, realm: str
) -> None:
    """An httpx client on the SDK's ForwardTransport reaches the API by path alone, with
    the realm's token attached by the broker, and never holds a token."""
    transport = ForwardTransport(fwd.broker.url, realm, api_key=fwd.stack.keys.everything)
    with httpx.Client(base_url="https://atlas.invalid", transport=transport) as client:
        response = client.get("/api/v1/accountreports", params={"year": 2026})

    echo = response.json()
    assert (200, f"{BASE_PATH}/api/v1/accountreports", "year=2026") == (
        response.status_code,
        echo["raw_path"],
        echo["query"],
    )


async def test_sdk_async_transport_posts_through_the_forward_route(
    fwd: ForwardSetup, realm: str
) -> None:
    """The async transport forwards a POST body intact."""
    transport = AsyncForwardTransport(fwd.broker.url, realm, api_key=fwd.stack.keys.everything)
    async with httpx.AsyncClient(base_url="https://atlas.invalid", transport=transport) as client:
        response = await client.post("/api/v1/orders", content=b"0123456789")

    assert (200, 10, sha256(b"0123456789")) == (
        response.status_code,
        response.json()["body_length"],
        response.json()["body_sha256"],
    )
