"""Attacker position: whoever can write the realm secrets in Vault.

Such a writer may change a realm's `token_url`; it must not be able to make the broker
send the realm's client secret anywhere the operator did not configure.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from stack import Realm, Stack

TOKEN_PATH = "/auth/realms/{realm}/protocol/openid-connect/token"


@dataclass
class CountingListener:
    """A TCP listener on loopback that counts the connections it is offered and keeps
    the bytes it receives, answering nothing."""

    sock: socket.socket = field(default_factory=socket.socket)
    connections: int = 0
    received: bytearray = field(default_factory=bytearray)

    def start(self) -> CountingListener:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.settimeout(1.0)
            try:
                self.received += conn.recv(65536)
            except OSError:
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[CountingListener]:
    server = CountingListener().start()
    yield server
    server.close()


def realm_pointing_at(stack: Stack, origin: str) -> Realm:
    realm = stack.new_realm("redirected", in_vault=False)
    stack.openbao.write_realm(
        realm.name,
        {
            "client_id": realm.client_id,
            "client_secret": realm.client_secret,
            "token_url": origin + TOKEN_PATH.format(realm=realm.name),
        },
    )
    return realm


def log_lines(stack: Stack, name: str) -> list[dict[str, Any]]:
    path = next(p for p in stack.processes if p.name == name).log_path
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_token_url_at_another_origin_sends_nothing(
    stack: Stack, listener: CountingListener
) -> None:
    """A realm whose Vault `token_url` names an origin that is not configured gets 502
    `idp-origin-not-allowed`, and not one connection reaches that origin."""
    broker = stack.start_broker()
    realm = realm_pointing_at(stack, listener.origin)

    response = stack.get_token(broker.url, realm.name)

    assert 502 == response.status_code
    assert response.json()["type"].endswith("/idp-origin-not-allowed")
    assert 0 == listener.connections
    assert realm.client_secret not in response.text


def test_refused_origin_is_audited_and_logged(stack: Stack, listener: CountingListener) -> None:
    """The refusal leaves a `token.fetch_failed` audit event with reason
    `idp-origin-not-allowed` and an error log line naming the realm and the origin."""
    broker = stack.start_broker(name="broker-audited")
    realm = realm_pointing_at(stack, listener.origin)

    stack.get_token(broker.url, realm.name)

    failures = [
        e
        for e in stack.audit_events(broker.process)
        if e["event"] == "token.fetch_failed" and e.get("realm") == realm.name
    ]
    assert ["idp-origin-not-allowed"] == [e["reason"] for e in failures]
    refusals = [
        line
        for line in log_lines(stack, "broker-audited")
        if line.get("realm") == realm.name and line.get("origin") == listener.origin
    ]
    assert ["error"] == [line["level"] for line in refusals]


def test_listed_origin_is_honoured(stack: Stack) -> None:
    """A `token_url` at an origin listed in BROKER_IDP_ALLOWED_ORIGINS is used, even when
    BROKER_IDP_URL names another origin."""
    from atlas_broker_dev.processes import free_port

    broker = stack.start_broker(
        BROKER_IDP_URL=f"http://127.0.0.1:{free_port()}",
        BROKER_IDP_ALLOWED_ORIGINS=f"https://idp.invalid, {stack.idp.url}",
    )
    realm = realm_pointing_at(stack, stack.idp.url)

    assert 200 == stack.get_token(broker.url, realm.name).status_code
    assert 1 == stack.idp_requests(realm.name)


def test_plain_http_to_a_remote_origin_is_a_warning_at_start(stack: Stack) -> None:
    """An allowed origin reached over plain http:// beyond loopback is named in a warning
    when the broker starts (loopback origins are not)."""
    stack.start_broker(
        name="broker-cleartext", BROKER_IDP_ALLOWED_ORIGINS="http://idp.example.com:8080"
    )

    warned = [
        line["origin"]
        for line in log_lines(stack, "broker-cleartext")
        if line["level"] == "warning" and "origin" in line
    ]
    assert ["http://idp.example.com:8080"] == warned
