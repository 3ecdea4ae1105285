"""A private CA named the way the chart wires `caBundle` (REQUESTS_CA_BUNDLE, SSL_CERT_FILE)
is what the broker trusts for Vault over TLS."""

from __future__ import annotations

import os
import secrets
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import hvac
import pytest

from atlas_broker_dev.processes import ManagedProcess, free_port
from atlas_broker_dev.servers import find_bao
from stack import Stack


@dataclass
class TlsVault:
    addr: str
    token: str
    ca: Path


@pytest.fixture
def tls_vault(stack: Stack) -> Iterator[TlsVault]:
    """An OpenBao dev server on HTTPS with a certificate from its own generated CA."""
    token = secrets.token_urlsafe(24)
    stack.leak_watch.add(token)
    port, cert_dir = free_port(), stack.log_dir / "bao-tls"
    cert_dir.mkdir(parents=True, exist_ok=True)
    process = ManagedProcess(
        "openbao-tls",
        [
            find_bao(),
            "server",
            "-dev",
            "-dev-tls",
            f"-dev-tls-cert-dir={cert_dir}",
            f"-dev-root-token-id={token}",
            f"-dev-listen-address=127.0.0.1:{port}",
            "-dev-no-store-token",
        ],
        log_dir=stack.log_dir,
        env={**os.environ, "BAO_LOG_LEVEL": "warn", "HOME": str(stack.log_dir)},
    ).start()
    vault = TlsVault(f"https://127.0.0.1:{port}", token, cert_dir / "vault-ca.pem")

    def healthy() -> bool:
        try:
            trust = ssl.create_default_context(cafile=vault.ca)
            return httpx.get(f"{vault.addr}/v1/sys/health", verify=trust).is_success
        except (httpx.HTTPError, OSError):  # no CA file yet, or not listening yet
            return False

    try:
        process.wait_until(healthy)
        yield vault
    finally:
        process.stop()


def test_vault_behind_a_private_ca_is_trusted_through_the_ca_bundle(
    stack: Stack, tls_vault: TlsVault
) -> None:
    """With the CA bundle named by REQUESTS_CA_BUNDLE and SSL_CERT_FILE the broker reads a
    realm from Vault over TLS; without it the same request fails for want of Vault."""
    realm = stack.new_realm(in_vault=False)
    hvac.Client(
        url=tls_vault.addr, token=tls_vault.token, verify=str(tls_vault.ca)
    ).secrets.kv.v2.create_or_update_secret(
        path=f"atlas/realms/{realm.name}",
        secret={"client_id": realm.client_id, "client_secret": realm.client_secret},
        mount_point="secret",
    )
    vault = {"BROKER_VAULT_ADDR": tls_vault.addr, "BROKER_VAULT_TOKEN": tls_vault.token}
    ca = str(tls_vault.ca)
    trusting = stack.start_broker(
        name="broker-ca", REQUESTS_CA_BUNDLE=ca, SSL_CERT_FILE=ca, **vault
    )
    untrusting = stack.start_broker(name="broker-no-ca", **vault)

    assert 200 == stack.get_token(trusting.url, realm.name).status_code
    assert 503 == stack.get_token(untrusting.url, realm.name).status_code
