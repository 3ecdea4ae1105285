"""Attacker positions against the forward proxy and the gateway: a caller trying to make
the broker send the realm's token to another host or path, a caller without the realm or
without a credential, an oversized body, and an API that lies (keeps answering 401, or
redirects elsewhere). A real broker forwards to the API stand-in, which counts every
request that reaches it: "nothing sent" is that count unchanged."""

from __future__ import annotations

import http.client
import os
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from forwarding import ForwardSetup, forward_setup

from stack import CallerKeys, Stack, bearer

MAX_BODY = 2 << 20  # BROKER_FORWARD_MAX_BODY for this module's broker

# Paths after /forward/ that would leave `{api_url}` (its origin or its path prefix) if a
# server or a URL library on the way decoded, normalised or re-parsed them.
ESCAPES = [
    "..%2F..%2Fadmin",
    "a%2fb",
    "a%2Fb/../../x",
    "a%5Cb",
    "a\\..\\x",
    "../x",
    "a/../../x",
    "./x",
    "%2e%2e/x",
    ".%2E/x",
    "%2e/x",
    "@evil.example/x",
    "user:pw@evil.example/x",
    "https://evil.example/x",
    "http:%2F%2Fevil.example/x",
    "//evil.example/x",
    "/evil.example/x",
    "%252e%252e/x",
    "a%00b",
    "a%",
    "a%zz",
]


@pytest.fixture(scope="module")
def fwd(module_stack: Stack) -> Iterator[ForwardSetup]:
    with forward_setup(module_stack, BROKER_FORWARD_MAX_BODY=str(MAX_BODY)) as setup:
        yield setup


@pytest.fixture
def realm(fwd: ForwardSetup) -> str:
    return fwd.stack.new_realm("esc").name


def _raw_request(fwd: ForwardSetup, target: str, key: str, method: str = "GET") -> tuple[int, str]:
    """Send `target` exactly as written (no client-side normalisation or quoting)."""
    parts = urlsplit(fwd.broker.url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        connection.putheader("Authorization", f"Bearer {key}")
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


@pytest.mark.parametrize("path", ESCAPES)
def test_path_escape_is_refused_with_nothing_sent(fwd: ForwardSetup, realm: str, path: str) -> None:
    """Every path trick is answered 400 and no request reaches the API."""
    before = fwd.api.requests()

    status, body = _raw_request(
        fwd, f"/v1/realms/{realm}/forward/{path}", fwd.stack.keys.everything
    )

    assert (400, before) == (status, fwd.api.requests())
    assert fwd.stack.keys.everything not in body


def test_encoded_line_break_is_refused_with_nothing_sent(fwd: ForwardSetup, realm: str) -> None:
    """An encoded CR LF (a header injection attempt) is refused, and no request reaches the
    API (the router itself matches no route for a decoded line break: 404)."""
    before = fwd.api.requests()
    target = f"/v1/realms/{realm}/forward/a%0d%0aHost:%20evil.example"

    status, _ = _raw_request(fwd, target, fwd.stack.keys.everything)

    assert (True, before) == (status in (400, 404), fwd.api.requests())


def test_absolute_form_request_target_stays_on_the_api(fwd: ForwardSetup, realm: str) -> None:
    """A request line naming another host (absolute form) still goes to the API's base,
    or is refused: the API stand-in is the only server that can see it."""
    before = fwd.api.requests()

    status, _ = _raw_request(
        fwd, f"http://evil.example/v1/realms/{realm}/forward/api/x", fwd.stack.keys.everything
    )

    assert (status, fwd.api.requests()) in ((200, before + 1), (400, before), (404, before))


def test_unauthenticated_caller_gets_401_and_nothing_is_sent(fwd: ForwardSetup, realm: str) -> None:
    """A wrong key gets 401 from the forward route, and the API sees nothing."""
    before = fwd.api.requests()

    response = httpx.post(
        fwd.forward_url(realm, "api/x"), headers=bearer("not-a-key"), content=b"x", timeout=30
    )

    assert (401, "application/problem+json", before) == (
        response.status_code,
        response.headers["content-type"],
        fwd.api.requests(),
    )


def test_caller_allowed_another_realm_gets_403_and_nothing_is_sent(
    fwd: ForwardSetup, realm: str
) -> None:
    """A caller allowed only another realm gets 403, and the API sees nothing."""
    before = fwd.api.requests()

    response = httpx.get(
        fwd.forward_url(realm, "api/x"), headers=bearer(fwd.stack.keys.limited), timeout=30
    )

    assert (403, before) == (response.status_code, fwd.api.requests())


def test_gateway_refuses_wrong_key_and_other_realm(fwd: ForwardSetup, realm: str) -> None:
    """The gateway route answers a wrong key 401 and a caller without the realm 403,
    with no Authorization header in either answer."""
    url = f"{fwd.broker.url}/v1/realms/{realm}/gateway/api/x"

    wrong = httpx.get(url, headers=bearer("not-a-key"), timeout=30)
    other = httpx.post(url, headers=bearer(fwd.stack.keys.limited), timeout=30)

    assert (401, 403, None, None) == (
        wrong.status_code,
        other.status_code,
        wrong.headers.get("authorization"),
        other.headers.get("authorization"),
    )
    assert CallerKeys.LIMITED_REALM != realm


def test_oversized_body_gets_413_and_nothing_is_sent(fwd: ForwardSetup, realm: str) -> None:
    """A body announced beyond BROKER_FORWARD_MAX_BODY gets 413 before anything is sent."""
    before = fwd.api.requests()

    response = httpx.post(
        fwd.forward_url(realm, "api/upload"),
        headers=bearer(fwd.stack.keys.everything),
        content=os.urandom(MAX_BODY + 1),
        timeout=60,
    )

    assert (413, "content-too-large", before) == (
        response.status_code,
        response.json()["type"].rsplit("/", 1)[-1],
        fwd.api.requests(),
    )


def test_oversized_chunked_body_gets_413(fwd: ForwardSetup, realm: str) -> None:
    """A chunked body (no length announced) that grows past the limit is cut off with 413."""
    chunks = [os.urandom(256 * 1024) for _ in range(MAX_BODY // (256 * 1024) + 2)]

    response = httpx.post(
        fwd.forward_url(realm, "api/upload"),
        headers=bearer(fwd.stack.keys.everything),
        content=iter(chunks),
        timeout=60,
    )

    assert 413 == response.status_code


def test_api_that_keeps_answering_401_costs_one_fresh_token_per_window(
    fwd: ForwardSetup, realm: str
) -> None:
    """An API answering every token 401: the first call gets one fresh token and one
    retry, later calls within 30 s no fresh token and no retry; the caller sees the 401."""
    assert (
        200
        == httpx.get(
            fwd.forward_url(realm, "api/x"), headers=bearer(fwd.stack.keys.everything), timeout=30
        ).status_code
    )
    fwd.api.reject(-1)
    try:
        api_before, idp_before = fwd.api.requests(), fwd.stack.idp_requests(realm)
        answers = [
            httpx.get(
                fwd.forward_url(realm, "api/x"),
                headers=bearer(fwd.stack.keys.everything),
                timeout=30,
            ).status_code
            for _ in range(5)
        ]
        sent, fetched = fwd.api.requests() - api_before, fwd.stack.idp_requests(realm) - idp_before
    finally:
        fwd.api.reject(0)

    assert ([401] * 5, 6, 1) == (answers, sent, fetched)


def test_api_redirect_is_returned_not_followed(fwd: ForwardSetup, realm: str) -> None:
    """An API redirecting elsewhere: the caller gets the 302 itself; the broker does not
    follow it with the token."""
    before = fwd.api.requests()

    response = httpx.get(
        fwd.forward_url(realm, "redirect-away"),
        headers=bearer(fwd.stack.keys.everything),
        timeout=30,
    )

    assert (302, "http://127.0.0.2:9/elsewhere", before + 1) == (
        response.status_code,
        response.headers["location"],
        fwd.api.requests(),
    )


def test_realm_api_url_at_a_foreign_origin_is_refused_with_nothing_sent(
    fwd: ForwardSetup,
) -> None:
    """A realm secret naming an api_url outside the allowed origins (someone who can write
    Vault) gets 502 and the token goes nowhere; the stand-in at an allowed origin sees no
    request either."""
    realm = fwd.realm_with_api_url("http://127.0.0.2:9/steal")
    before = fwd.api.requests()

    response = httpx.get(
        fwd.forward_url(realm.name, "api/x"), headers=bearer(fwd.stack.keys.everything), timeout=30
    )

    assert (502, "idp-origin-not-allowed", before) == (
        response.status_code,
        response.json()["type"].rsplit("/", 1)[-1],
        fwd.api.requests(),
    )
