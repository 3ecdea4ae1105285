"""`Forwarder` on the fakes: what the API is sent, the one retry after a 401, and the
audit record; the API is a scripted fake recording every request."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from broker.core.errors import ApiNotConfigured, IdPOriginNotAllowed
from broker.core.forwarding import Forwarder, IncomingRequest
from broker.core.models import ApiRequest, ApiResponse, token_fingerprint
from broker.core.policy import Caller
from fakes import realm_credentials
from harness import CTX, Harness

API = "https://api.example.test/base"
CALLER = Caller(name="billing-api", realms=frozenset({"acme"}), roles=frozenset())


class ScriptedApi:
    """Answers with the scripted statuses in turn (then 200); keeps what it was sent."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.sent: list[ApiRequest] = []
        self.bodies: list[bytes] = []

    async def send(self, request: ApiRequest) -> ApiResponse:
        self.sent.append(request)
        body = request.body
        if isinstance(body, bytes):
            self.bodies.append(body)
        elif body is not None:
            self.bodies.append(b"".join([chunk async for chunk in body]))
        status = self.statuses.pop(0) if self.statuses else 200

        async def answer() -> AsyncIterator[bytes]:
            yield b"{}"

        async def close() -> None:
            return None

        headers = [("connection", "close, x-hop"), ("x-hop", "1"), ("set-cookie", "a=1")]
        return ApiResponse(status, [*headers, ("set-cookie", "b=2")], answer(), close)


def _forwarder(h: Harness, api: ScriptedApi, *, api_url: str | None = API) -> Forwarder:
    return Forwarder(
        broker=h.broker,
        secrets=h.secrets,
        store=h.store,
        api=api,
        audit=h.audit,
        clock=h.clock,
        api_url=api_url,
        allowed_origins=frozenset({"https://api.example.test"}),
    )


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _get(path: str = "v1/reports", query: str = "", **extra: object) -> IncomingRequest:
    fields: dict[str, object] = {
        "method": "GET",
        "raw_path": path,
        "raw_query": query,
        "headers": [("authorization", "Bearer caller-key"), ("accept", "application/json")],
        "body": None,
        "content_length": None,
    }
    fields.update(extra)
    return IncomingRequest(**fields)  # type: ignore[arg-type]


def _token_of(request: ApiRequest) -> str:
    return dict(request.headers)["authorization"]


async def test_request_goes_to_the_api_base_with_the_realm_token_only(h: Harness) -> None:
    """The API gets `{api_url}/{path}?{query}`, the realm's token as Authorization, the
    request id, and none of the caller's credentials or hop-by-hop headers."""
    api = ScriptedApi()
    headers = [
        ("authorization", "Bearer caller-key"),
        ("cookie", "session=1"),
        ("proxy-authorization", "Basic x"),
        ("connection", "x-private"),
        ("x-private", "1"),
        ("te", "trailers"),
        ("x-request-id", "caller-chosen"),
        ("x-team", "ledger"),
    ]

    await _forwarder(h, api).forward(CALLER, "acme", _get(query="a=1", headers=headers), ctx=CTX)

    (sent,) = api.sent
    assert (
        f"{API}/v1/reports?a=1",
        [("x-team", "ledger"), ("x-request-id", "req-0001")],
        f"Bearer {h.issuer.issued[-1].value}",
    ) == (
        sent.url,
        [(n, v) for n, v in sent.headers if n != "authorization"],
        _token_of(sent),
    )


async def test_caller_gets_the_api_headers_without_hop_by_hop_ones(h: Harness) -> None:
    """The answer keeps both Set-Cookie headers and drops Connection and what it names."""
    response = await _forwarder(h, ScriptedApi()).forward(CALLER, "acme", _get(), ctx=CTX)

    assert [("set-cookie", "a=1"), ("set-cookie", "b=2")] == response.headers


async def test_api_401_gets_one_fresh_token_and_one_retry(h: Harness) -> None:
    """A 401 from the API: one more IdP fetch, the request sent again with the new token,
    the body resent whole."""
    api = ScriptedApi(401)
    post = _get(method="POST", body=_chunks(b"ab", b"cd"), content_length=4)

    response = await _forwarder(h, api).forward(CALLER, "acme", post, ctx=CTX)

    first, second = api.sent
    assert (200, 2, [b"abcd", b"abcd"], True) == (
        response.status,
        h.issuer.fetches,
        api.bodies,
        _token_of(first) != _token_of(second),
    )


async def test_second_401_within_the_window_is_returned_without_retry(h: Harness) -> None:
    """Within 30 s of a forced refresh another 401 costs no fetch and gets no retry."""
    api = ScriptedApi(401, 401, 401)
    forwarder = _forwarder(h, api)
    await forwarder.forward(CALLER, "acme", _get(), ctx=CTX)
    h.advance(10)

    response = await forwarder.forward(CALLER, "acme", _get(), ctx=CTX)

    assert (401, 3, 2) == (response.status, len(api.sent), h.issuer.fetches)


async def test_body_too_large_to_replay_is_not_retried(h: Harness) -> None:
    """A body over 1 MiB streams through once; its 401 goes back to the caller."""
    api = ScriptedApi(401)
    big = (1 << 20) + 1
    put = _get(method="PUT", body=_chunks(b"x" * big), content_length=big)

    response = await _forwarder(h, api).forward(CALLER, "acme", put, ctx=CTX)

    assert (401, 1, [big]) == (response.status, len(api.sent), [len(b) for b in api.bodies])


async def test_realm_api_url_at_a_foreign_origin_sends_nothing(h: Harness) -> None:
    """A realm secret naming an api_url at an origin not allowed: refused, nothing sent."""
    h.secrets.realms["acme"] = dataclasses.replace(
        realm_credentials("acme"), api_url="https://evil.example/steal"
    )
    api = ScriptedApi()

    with pytest.raises(IdPOriginNotAllowed):
        await _forwarder(h, api).forward(CALLER, "acme", _get(), ctx=CTX)
    assert [] == api.sent


async def test_realm_api_url_wins_over_the_default(h: Harness) -> None:
    """A realm's own api_url (at an allowed origin) is where its calls go."""
    h.secrets.realms["acme"] = dataclasses.replace(
        realm_credentials("acme"), api_url="https://api.example.test/acme/"
    )
    api = ScriptedApi()

    await _forwarder(h, api, api_url=None).forward(CALLER, "acme", _get(), ctx=CTX)

    assert "https://api.example.test/acme/v1/reports" == api.sent[0].url


async def test_no_api_url_at_all_is_refused(h: Harness) -> None:
    """Without BROKER_API_URL and without a realm api_url: 503 api-not-configured."""
    with pytest.raises(ApiNotConfigured):
        await _forwarder(h, ScriptedApi(), api_url=None).forward(CALLER, "acme", _get(), ctx=CTX)


async def test_forwarded_call_is_audited_without_query(h: Harness) -> None:
    """One `api.forwarded` event: caller, realm, method, path without query, status and
    the fingerprint of the token sent."""
    api = ScriptedApi(404)

    await _forwarder(h, api).forward(CALLER, "acme", _get(query="secret=1"), ctx=CTX)

    (event,) = h.audit.named("api.forwarded")
    token = _token_of(api.sent[0]).removeprefix("Bearer ")
    assert ("billing-api", "acme", "GET", "/v1/reports", 404, "req-0001") == (
        event.caller,
        event.realm,
        event.method,
        event.path,
        event.status,
        event.request_id,
    )
    assert token_fingerprint(token) == event.token_sha256


async def test_vault_outage_keeps_the_known_api_base(h: Harness) -> None:
    """Once a realm's API base was read, a Vault outage after its reuse period does not
    stop forwarding: the last known base serves on."""
    api = ScriptedApi()
    forwarder = _forwarder(h, api)
    await forwarder.forward(CALLER, "acme", _get(), ctx=CTX)
    h.secrets.unavailable = True
    h.advance(120)

    response = await forwarder.forward(CALLER, "acme", _get(), ctx=CTX)

    assert (200, f"{API}/v1/reports") == (response.status, api.sent[-1].url)
