"""Bad input of any kind gets a 4xx problem+json: never a 5xx, never a hang."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx
import pytest

from atlas_broker_dev.servers import BrokerServer
from stack import Stack, bearer

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def broker(module_stack: Stack) -> BrokerServer:
    """One broker for the module: bad input must leave it serving."""
    return module_stack.start_broker()


@pytest.fixture
def key(module_stack: Stack) -> str:
    return module_stack.keys.everything


def assert_problem_4xx(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, response.text
    assert PROBLEM == response.headers["content-type"]
    assert response.status_code == response.json()["status"]


@pytest.mark.parametrize(
    "raw_realm",
    [
        "a%20b",
        "a" * 65,
        "%00",
        "acme%0A",
        "-leading-dash",
        ".hidden",
        "%C3%A9t%C3%A9",
        "acme%3Bdrop",
        "%2e%2e",
    ],
)
def test_malformed_realm_is_422(broker: BrokerServer, key: str, raw_realm: str) -> None:
    """Realm names outside ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ are refused with 422."""
    response = httpx.get(f"{broker.url}/v1/realms/{raw_realm}/token", headers=bearer(key))
    assert 422 == response.status_code, response.text
    assert_problem_4xx(response)


@pytest.mark.parametrize("raw_realm", ["../x", "..%2Fx", "..%2F..%2Fsys%2Fhealth"])
def test_path_traversal_never_reaches_a_realm(
    broker: BrokerServer, key: str, raw_realm: str
) -> None:
    """Dot segments and encoded slashes resolve to no route: a 404 problem."""
    response = httpx.get(f"{broker.url}/v1/realms/{raw_realm}/token", headers=bearer(key))
    assert 404 == response.status_code
    assert_problem_4xx(response)


@pytest.mark.parametrize("min_ttl", ["abc", "-1", "1e9", "99999999999999999999", "", "1.5", "NaN"])
def test_bad_min_ttl_is_422(broker: BrokerServer, key: str, min_ttl: str) -> None:
    """A non-numeric, negative or absurd min_ttl is refused with 422."""
    response = httpx.get(
        f"{broker.url}/v1/realms/acme/token", params={"min_ttl": min_ttl}, headers=bearer(key)
    )
    assert 422 == response.status_code, response.text
    assert_problem_4xx(response)


def test_unauthenticated_bad_input_is_401_first(broker: BrokerServer) -> None:
    """Without a credential even a malformed request learns only that it is unauthenticated."""
    response = httpx.get(f"{broker.url}/v1/realms/a%20b/token", params={"min_ttl": "x"})
    assert 401 == response.status_code
    assert_problem_4xx(response)


def test_header_of_64_kib_is_refused_with_a_problem(broker: BrokerServer, key: str) -> None:
    """A 64 KiB header gets a 4xx problem+json, and the broker keeps serving."""
    response = httpx.get(
        f"{broker.url}/v1/realms/acme/token",
        headers={**bearer(key), "X-Padding": "x" * 65536},
    )
    assert_problem_4xx(response)
    assert 200 == httpx.get(f"{broker.url}/healthz").status_code


def test_huge_authorization_header_is_refused(broker: BrokerServer) -> None:
    """A 64 KiB bearer credential is refused with a 4xx problem, not hashed and looked up."""
    response = httpx.get(
        f"{broker.url}/v1/realms/acme/token", headers={"Authorization": "Bearer " + "k" * 65536}
    )
    assert_problem_4xx(response)


def test_unknown_route_is_a_404_problem(broker: BrokerServer, key: str) -> None:
    """Paths the API does not have answer with a 404 problem."""
    response = httpx.get(f"{broker.url}/v2/whatever", headers=bearer(key))
    assert 404 == response.status_code
    assert_problem_4xx(response)


def test_wrong_method_is_a_405_problem(broker: BrokerServer, key: str) -> None:
    """A POST to the token resource answers 405 as a problem."""
    response = httpx.post(f"{broker.url}/v1/realms/acme/token", headers=bearer(key))
    assert 405 == response.status_code
    assert_problem_4xx(response)


def test_non_ascii_authorization_is_401(broker: BrokerServer) -> None:
    """A credential with bytes outside ASCII is simply unknown."""
    response = httpx.get(
        f"{broker.url}/v1/realms/acme/token",
        headers={"Authorization": "Bearer caf\xe9".encode("latin-1")},
    )
    assert 401 == response.status_code
    assert_problem_4xx(response)


def test_garbage_request_line_does_not_hang(broker: BrokerServer) -> None:
    """A request that is not HTTP is answered or closed promptly, and the broker lives on."""
    parts = urlsplit(broker.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        sock.recv(4096)  # an error answer or EOF, within the timeout
    assert 200 == httpx.get(f"{broker.url}/healthz").status_code
