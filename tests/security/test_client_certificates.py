"""Attacker position: a network client presenting a client certificate to the HTTPS
listener. Only a certificate from the configured CA, still valid, naming a caller of the
policy (`spiffe_id` URI SAN or `cert_subject`) is a caller; the server certificate
follows its files as they are rotated."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from attacks import start_tls_broker
from broker.devstack.servers import BrokerServer
from callers import PolicyWriter, policy_path
from stack import Realm, Stack, wait_for
from tls_certs import CertificateAuthority, Issued

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
def broker(module_stack: Stack, pki: Pki) -> BrokerServer:
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
def realm(module_stack: Stack) -> Realm:
    return module_stack.new_realm("mtls")


def with_certificate(pki: Pki, issued: Issued, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    cert_file, key_file = issued.write(pki.directory / "clients", name)
    context.load_cert_chain(cert_file, key_file)
    return context


def token_request(
    stack: Stack, broker: BrokerServer, realm: Realm, context: ssl.SSLContext
) -> httpx.Response:
    response = httpx.get(f"{broker.url}/v1/realms/{realm.name}/token", verify=context, timeout=30)
    stack.served_tokens(response)
    return response


def test_a_certificate_with_a_callers_spiffe_id_gets_a_token(
    module_stack: Stack, broker: BrokerServer, realm: Realm, pki: Pki
) -> None:
    """A valid certificate from the CA whose URI SAN is a caller's `spiffe_id`: 200."""
    context = with_certificate(pki, pki.ca.issue("ledger", uris=(LEDGER_ID,)), "ledger")
    response = token_request(module_stack, broker, realm, context)
    assert (200, realm.name) == (response.status_code, response.json().get("realm"))


def test_a_certificate_with_a_callers_subject_gets_a_token(
    module_stack: Stack, broker: BrokerServer, realm: Realm, pki: Pki
) -> None:
    """A valid certificate whose subject is a caller's `cert_subject`: 200."""
    context = with_certificate(pki, pki.ca.issue("reports"), "reports")
    assert 200 == token_request(module_stack, broker, realm, context).status_code


def test_an_expired_certificate_is_refused(
    module_stack: Stack, broker: BrokerServer, realm: Realm, pki: Pki
) -> None:
    """An expired certificate naming a caller fails the TLS handshake: no token."""
    issued = pki.ca.issue("ledger", uris=(LEDGER_ID,), expired=True)
    context = with_certificate(pki, issued, "expired")
    with pytest.raises(httpx.TransportError):
        token_request(module_stack, broker, realm, context)


def test_a_certificate_from_another_ca_is_refused(
    module_stack: Stack, broker: BrokerServer, realm: Realm, pki: Pki
) -> None:
    """A certificate naming a caller but signed by another CA fails the handshake."""
    forged = CertificateAuthority("Elsewhere CA").issue("ledger", uris=(LEDGER_ID,))
    context = with_certificate(pki, forged, "forged")
    with pytest.raises(httpx.TransportError):
        token_request(module_stack, broker, realm, context)


def test_a_certificate_naming_no_caller_is_401(
    module_stack: Stack, broker: BrokerServer, realm: Realm, pki: Pki
) -> None:
    """A valid certificate from the CA whose SAN and subject match no caller: 401."""
    stranger = pki.ca.issue("stranger", uris=("spiffe://atlas.test/ns/x/sa/stranger",))
    context = with_certificate(pki, stranger, "stranger")
    assert 401 == token_request(module_stack, broker, realm, context).status_code


def test_a_rotated_server_certificate_is_served_without_a_restart(
    broker: BrokerServer, pki: Pki
) -> None:
    """New certificate files (as cert-manager writes them) are served to new connections."""
    rotated = pki.ca.issue("broker-rotated", server=True)
    rotated.write(pki.directory, "server")
    host, port = broker.url.removeprefix("https://").split(":")
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
