"""Attacker position: anyone who can open a TCP connection to the broker's port, with no
credential at all (or with a certificate or key of their own making). They must not
exhaust its memory, its connections or its audit trail, must not find pages that load
code from elsewhere, and must not pass for a caller; the broker keeps serving its real
callers while they try."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from cryptography import x509

from atlas_broker_dev.servers import BrokerServer
from attacks import (
    closed_by_peer,
    connect,
    eventually_status,
    rss_bytes,
    serving_throughout,
    start_tls_broker,
)
from callers import PolicyWriter, policy_path
from polling import wait_for
from stack import Realm, Stack, bearer
from tls_certs import CertificateAuthority, Issued

MiB = 1 << 20


@pytest.fixture(scope="module")
def broker(module_stack: Stack) -> BrokerServer:
    return module_stack.start_broker(BROKER_HEADER_TIMEOUT="3")


def test_an_endless_header_is_cut_off_before_one_mib(broker: BrokerServer) -> None:
    """A header that never ends (32 MiB streamed) is cut off before 1 MiB is read, the
    broker's memory grows less than 16 MiB, and other callers are served throughout."""
    assert broker.process.proc is not None
    before = rss_bytes(broker.process.proc.pid)
    sent = 0
    with serving_throughout(broker) as statuses, connect(broker, send_buffer=64 * 1024) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: broker\r\nX-Endless: ")
        chunk = b"a" * 65536
        with contextlib.suppress(ConnectionError):
            while sent < 32 * MiB:
                sock.sendall(chunk)
                sent += len(chunk)
        grown = rss_bytes(broker.process.proc.pid) - before
    assert sent < MiB, f"{sent} bytes of one header accepted"
    assert grown < 16 * MiB, f"the broker grew by {grown} bytes"
    assert statuses
    assert {200} == set(statuses)


def test_an_unfinished_oversized_header_is_answered_431_at_once(broker: BrokerServer) -> None:
    """Headers past 16 KiB that are still coming get 431 and a closed connection, without
    waiting for their end."""
    with connect(broker) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: broker\r\nX-Big: " + b"a" * (20 * 1024))
        sock.settimeout(30)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    assert b"application/problem+json" in answer


def test_a_client_sending_one_byte_a_second_is_dropped(broker: BrokerServer) -> None:
    """A slow-loris client trickling its headers is disconnected once the header read time
    (3 s here) is up, while others are served."""
    with serving_throughout(broker) as statuses, connect(broker) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: broker\r\n")
        dropped = False
        for _ in range(30):  # at one byte a second, 30 s: ten times the limit
            try:
                sock.sendall(b"X")
            except ConnectionError:
                dropped = True
                break
            if closed_by_peer(sock, wait=1.0):
                dropped = True
                break
    assert dropped
    assert statuses
    assert {200} == set(statuses)


def test_a_response_slower_than_the_header_timeout_is_delivered(
    module_stack: Stack, broker: BrokerServer
) -> None:
    """The header timer covers the request's head only: a caller whose token takes longer
    than it (a slow IdP, 4 s against 3 s here) gets it on its kept-alive connection, twice."""
    realm = module_stack.new_realm("slow")
    module_stack.set_fault(realm.name, "delay", seconds=4, count=1)
    with httpx.Client(base_url=broker.url, timeout=30) as client:
        statuses = [
            client.get(
                f"/v1/realms/{realm.name}/token", headers=bearer(module_stack.keys.everything)
            ).status_code
            for _ in range(2)
        ]
    assert [200, 200] == statuses


def test_connections_past_the_limit_are_refused_at_once(stack: Stack) -> None:
    """Past BROKER_MAX_CONNECTIONS open connections, a new one is answered 503 and closed
    at once; once they go, callers are served again."""
    broker = stack.start_broker(BROKER_MAX_CONNECTIONS="20", BROKER_HEADER_TIMEOUT="60")
    idle = [connect(broker) for _ in range(20)]
    try:
        with connect(broker) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: broker\r\n\r\n")
            extra.settimeout(30)
            answer = extra.recv(65536)
    finally:
        for sock in idle:
            sock.close()
    assert answer.startswith(b"HTTP/1.1 503 "), answer[:80]
    assert 200 == eventually_status(lambda: httpx.get(f"{broker.url}/healthz", timeout=30))


def test_a_declared_oversized_body_is_413_before_anything_else(broker: BrokerServer) -> None:
    """A body declared larger than BROKER_MAX_BODY_BYTES is refused with 413 problem+json
    before authentication, on any route."""
    response = httpx.post(
        f"{broker.url}/v1/realms/acme/rotate",
        content=b"x" * (2 * MiB),
        headers={"Content-Type": "application/octet-stream"},
        timeout=30,
    )
    assert (413, "application/problem+json") == (
        response.status_code,
        response.headers["content-type"],
    )


def test_3000_wrong_keys_leave_a_handful_of_audit_entries(stack: Stack) -> None:
    """3,000 requests with a wrong key are audited as one `auth.failed` event per source
    address and minute (counted, with first and last time and reasons), not 3,000; the
    X-Forwarded-For they carry is not believed from a peer that is no trusted proxy."""
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    broker = stack.start_broker(BROKER_KEY_PREFIX=prefix)
    wrong = {"Authorization": "Bearer atb_" + "x" * 43, "X-Forwarded-For": "203.0.113.9"}

    def refuse(count: int) -> list[int]:
        with httpx.Client(base_url=broker.url, headers=wrong, timeout=30) as client:
            return [client.get("/v1/realms/acme/token").status_code for _ in range(count)]

    with ThreadPoolExecutor(4) as pool:
        statuses = [s for batch in pool.map(refuse, [750] * 4) for s in batch]
    broker.process.stop()  # the last minute's counts are written at shutdown
    entries = redis.Redis.from_url(stack.redis.url).xrange(f"{prefix}:audit")
    records = [json.loads(next(iter(fields.values()))) for _, fields in entries]
    failed = [r for r in records if r["event"] == "auth.failed"]
    print(f"audit entries for 3,000 refusals: {len(records)}")
    assert {401} == set(statuses)
    assert len(records) <= 3, [r["event"] for r in records[:10]]
    assert 3000 == sum(r["count"] for r in failed)
    assert {"127.0.0.1"} == {r["client_ip"] for r in failed}
    assert all(r["first_time"] <= r["last_time"] for r in failed)
    assert {"api-key-refused"} == {reason for r in failed for reason in r["reasons"]}


def test_behind_a_trusted_proxy_the_forwarded_client_is_audited(stack: Stack) -> None:
    """With the peer in BROKER_TRUSTED_PROXIES, the audited source of a failed
    authentication is the right-most untrusted X-Forwarded-For hop."""
    broker = stack.start_broker(BROKER_TRUSTED_PROXIES="127.0.0.0/8, 10.0.0.0/8")
    response = httpx.get(
        f"{broker.url}/v1/realms/acme/token",
        headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9, 10.1.2.3"},
        timeout=30,
    )
    broker.process.stop()
    failed = [e for e in stack.audit_events(broker.process) if e["event"] == "auth.failed"]
    assert 401 == response.status_code
    assert [("203.0.113.9", {"no-bearer-credential": 1})] == [
        (e["client_ip"], e["reasons"]) for e in failed
    ]


def test_docs_and_redoc_are_off_by_default(broker: BrokerServer) -> None:
    """Without BROKER_DOCS the interactive pages are 404; the API description stays."""
    statuses = [
        httpx.get(f"{broker.url}{path}", timeout=30).status_code
        for path in ("/docs", "/redoc", "/openapi.json")
    ]
    assert [404, 404, 200] == statuses


def test_docs_when_on_load_nothing_from_elsewhere(stack: Stack) -> None:
    """With BROKER_DOCS=true, /docs is one self-contained page: no script, style or image
    from any other origin (no CDN)."""
    broker = stack.start_broker(BROKER_DOCS="true")
    page = httpx.get(f"{broker.url}/docs", timeout=30)
    assert (200, "text/html") == (page.status_code, page.headers["content-type"].split(";")[0])
    assert [] == re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page.text)
    assert "/v1/realms/{realm}/token" in page.text


def test_example_policies_carry_a_placeholder_not_a_hash() -> None:
    """No documented policy example holds a real-looking key hash (whose key someone could
    guess, as sha256("test") once was): they hold a placeholder."""
    root = Path(__file__).resolve().parents[2]
    documents = [root / "README.md", *root.glob("docs/*.md"), *root.glob("helm/**/*.md")]
    documents += [*root.glob("helm/**/values.yaml"), root / "SECURITY.md"]
    found = {
        str(path.relative_to(root))
        for path in documents
        if path.is_file() and re.search(r"\b[0-9a-fA-F]{64}\b", path.read_text())
    }
    assert set() == found


# -- client certificates on the HTTPS listener ---------------------------------------------
# Only a certificate from the configured CA, still valid, naming a caller of the policy
# (`spiffe_id` URI SAN or `cert_subject`) is a caller; the server certificate follows its
# files as they are rotated.

LEDGER_ID = "spiffe://atlas.test/ns/payments/sa/ledger"
REPORTS_SUBJECT = "CN=reports,O=Atlas"


@dataclass
class Pki:
    ca: CertificateAuthority
    ca_file: Path
    directory: Path
    cert_file: Path
    key_file: Path


@pytest.fixture(scope="module")
def pki(module_stack: Stack) -> Pki:
    ca = CertificateAuthority()
    directory = module_stack.log_dir / "tls"
    cert_file, key_file = ca.issue("broker", server=True).write(directory, "server")
    return Pki(ca, ca.write(directory / "ca.crt"), directory, cert_file, key_file)


@pytest.fixture(scope="module")
def tls_broker(module_stack: Stack, pki: Pki) -> BrokerServer:
    writer = PolicyWriter(policy_path(module_stack), module_stack.leak_watch)
    writer.callers += [
        {"name": "ledger", "spiffe_id": LEDGER_ID, "realms": ["*"]},
        {"name": "reports", "cert_subject": REPORTS_SUBJECT, "realms": ["*"]},
    ]
    return start_tls_broker(
        module_stack,
        pki.ca_file,
        name="tls-broker",
        BROKER_POLICY_FILE=str(writer.write()),
        BROKER_TLS_CERT_FILE=str(pki.cert_file),
        BROKER_TLS_KEY_FILE=str(pki.key_file),
        BROKER_TLS_CLIENT_CA_FILE=str(pki.ca_file),
    )


@pytest.fixture(scope="module")
def mtls_realm(module_stack: Stack) -> Realm:
    return module_stack.new_realm("mtls")


def with_certificate(pki: Pki, issued: Issued, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    cert_file, key_file = issued.write(pki.directory / "clients", name)
    context.load_cert_chain(cert_file, key_file)
    return context


def token_request(
    stack: Stack, server: BrokerServer, realm: Realm, context: ssl.SSLContext
) -> httpx.Response:
    response = httpx.get(f"{server.url}/v1/realms/{realm.name}/token", verify=context, timeout=30)
    stack.served_tokens(response)
    return response


def test_a_certificate_with_a_callers_spiffe_id_gets_a_token(
    module_stack: Stack, tls_broker: BrokerServer, mtls_realm: Realm, pki: Pki
) -> None:
    """A valid certificate from the CA whose URI SAN is a caller's `spiffe_id`: 200."""
    context = with_certificate(pki, pki.ca.issue("ledger", uris=(LEDGER_ID,)), "ledger")
    response = token_request(module_stack, tls_broker, mtls_realm, context)
    assert (200, mtls_realm.name) == (response.status_code, response.json().get("realm"))


def test_a_certificate_with_a_callers_subject_gets_a_token(
    module_stack: Stack, tls_broker: BrokerServer, mtls_realm: Realm, pki: Pki
) -> None:
    """A valid certificate whose subject is a caller's `cert_subject`: 200."""
    context = with_certificate(pki, pki.ca.issue("reports"), "reports")
    assert 200 == token_request(module_stack, tls_broker, mtls_realm, context).status_code


def test_an_expired_certificate_is_refused(
    module_stack: Stack, tls_broker: BrokerServer, mtls_realm: Realm, pki: Pki
) -> None:
    """An expired certificate naming a caller fails the TLS handshake: no token."""
    issued = pki.ca.issue("ledger", uris=(LEDGER_ID,), expired=True)
    context = with_certificate(pki, issued, "expired")
    with pytest.raises(httpx.TransportError):
        token_request(module_stack, tls_broker, mtls_realm, context)


def test_a_certificate_from_another_ca_is_refused(
    module_stack: Stack, tls_broker: BrokerServer, mtls_realm: Realm, pki: Pki
) -> None:
    """A certificate naming a caller but signed by another CA fails the handshake."""
    forged = CertificateAuthority("Elsewhere CA").issue("ledger", uris=(LEDGER_ID,))
    context = with_certificate(pki, forged, "forged")
    with pytest.raises(httpx.TransportError):
        token_request(module_stack, tls_broker, mtls_realm, context)


def test_a_certificate_naming_no_caller_is_401(
    module_stack: Stack, tls_broker: BrokerServer, mtls_realm: Realm, pki: Pki
) -> None:
    """A valid certificate from the CA whose SAN and subject match no caller: 401."""
    stranger = pki.ca.issue("stranger", uris=("spiffe://atlas.test/ns/x/sa/stranger",))
    context = with_certificate(pki, stranger, "stranger")
    assert 401 == token_request(module_stack, tls_broker, mtls_realm, context).status_code


def test_a_rotated_server_certificate_is_served_without_a_restart(
    tls_broker: BrokerServer, pki: Pki
) -> None:
    """New certificate files (as cert-manager writes them) are served to new connections."""
    rotated = pki.ca.issue("broker-rotated", server=True)
    rotated.write(pki.directory, "server")
    host, port = tls_broker.url.removeprefix("https://").split(":")
    context = ssl.create_default_context(cafile=str(pki.ca_file))

    def served_serial() -> int:
        with (
            socket.create_connection((host, int(port)), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    wait_for(
        lambda: served_serial() == rotated.cert.serial_number,
        timeout=15,
        message="the rotated certificate was not served",
    )
