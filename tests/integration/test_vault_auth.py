"""Vault authentication over time: AppRole tokens expire and the broker logs in again."""

from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Any

import httpx
import hvac
import hvac.exceptions
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from polling import wait_for
from stack import Stack
from threaded_server import ThreadedServer
from vault_policy import documented_vault_policy


def approle(client: hvac.Client, *, ttl: str, max_ttl: str) -> tuple[str, str]:
    """An AppRole whose tokens live `ttl` (renewable up to `max_ttl`): role_id, secret_id."""
    if "approle/" not in client.sys.list_auth_methods()["data"]:
        client.sys.enable_auth_method("approle")
    client.sys.create_or_update_policy(name="atlas-broker", policy=documented_vault_policy())
    client.auth.approle.create_or_update_approle(
        role_name="atlas-broker",
        token_policies=["atlas-broker"],
        token_ttl=ttl,
        token_max_ttl=max_ttl,
    )
    role_id = client.auth.approle.read_role_id("atlas-broker")["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id("atlas-broker")["data"]["secret_id"]
    return role_id, secret_id


def role_tokens(client: hvac.Client) -> set[str]:
    """Accessors of the live tokens AppRole issued for the broker's role."""
    live = set()
    for accessor in client.auth.token.list_accessors()["data"]["keys"]:
        try:
            meta = client.auth.token.lookup_accessor(accessor)["data"].get("meta") or {}
        except hvac.exceptions.VaultError:  # expired between the listing and the lookup
            continue
        if meta.get("role_name") == "atlas-broker":
            live.add(accessor)
    return live


def test_approle_token_past_its_max_ttl_is_replaced_by_a_new_login(stack: Stack) -> None:
    """With AppRole tokens that die after 6 s, the broker still reads new realms from
    Vault once its first token is gone: it renewed, then logged in again."""
    role_id, secret_id = approle(stack.openbao.client(), ttl="3s", max_ttl="6s")
    stack.leak_watch.add(secret_id)
    broker = stack.start_broker(
        BROKER_VAULT_TOKEN="", BROKER_VAULT_ROLE_ID=role_id, BROKER_VAULT_SECRET_ID=secret_id
    )
    before = stack.new_realm()
    assert 200 == stack.get_token(broker.url, before.name).status_code
    root = stack.openbao.client()
    first_logins = role_tokens(root)
    assert first_logins, "no AppRole token of the broker's role found"
    wait_for(
        lambda: not first_logins & role_tokens(root),
        timeout=30,
        message="the first login's token outlived its max TTL",
    )
    after = stack.new_realm()
    response = stack.get_token(broker.url, after.name)
    assert 200 == response.status_code, response.text
    assert "ok" == httpx.get(f"{broker.url}/readyz", timeout=10).json()["checks"]["vault"]


SERVICE_ACCOUNT = "system:serviceaccount:payments:atlas-broker"


class TokenReviewAPI:
    """A Kubernetes API stand-in answering TokenReviews on loopback, so OpenBao's
    Kubernetes auth has a cluster to ask: it knows one service-account token."""

    def __init__(self, known_jwt: str) -> None:
        async def review(request: Request) -> JSONResponse:
            body = await request.json()
            known = body.get("spec", {}).get("token") == known_jwt
            self.reviews += 1
            status: dict[str, Any] = {"authenticated": known}
            if known:
                status["user"] = {"username": SERVICE_ACCOUNT, "uid": "7f1c", "groups": []}
            return JSONResponse(
                {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "status": status}
            )

        self.reviews = 0
        app = Starlette(
            routes=[Route("/apis/authentication.k8s.io/v1/tokenreviews", review, methods=["POST"])]
        )
        self._server = ThreadedServer(app, name="TokenReview API")
        self.port = self._server.port

    def __enter__(self) -> TokenReviewAPI:
        self._server.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.stop()


def service_account_jwt() -> str:
    """A JWT shaped like a projected service-account token (the API stand-in vouches for
    it; OpenBao reads its claims)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {
        "iss": "kubernetes/serviceaccount",
        "sub": SERVICE_ACCOUNT,
        "kubernetes.io/serviceaccount/namespace": "payments",
        "kubernetes.io/serviceaccount/service-account.name": "atlas-broker",
        "kubernetes.io/serviceaccount/service-account.uid": "7f1c",
        "iat": now,
        "exp": now + 3600,
    }
    return jwt.encode(claims, key, algorithm="RS256")


def self_signed_ca() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-cluster-ca")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def test_kubernetes_auth_logs_in_with_the_service_account_token(
    stack: Stack, tmp_path: Path
) -> None:
    """With BROKER_VAULT_K8S_ROLE the broker logs in to Vault with the pod's token file and
    reads realms through the role's policy."""
    account_jwt = service_account_jwt()
    stack.leak_watch.add(account_jwt)
    token_file = tmp_path / "token"
    token_file.write_text(account_jwt)
    client = stack.openbao.client()
    approle(client, ttl="60s", max_ttl="120s")  # creates the broker's Vault policy
    with TokenReviewAPI(account_jwt) as api:
        if "kubernetes/" not in client.sys.list_auth_methods()["data"]:
            client.sys.enable_auth_method("kubernetes")
        client.write_data(
            "auth/kubernetes/config",
            data={
                "kubernetes_host": f"http://127.0.0.1:{api.port}",
                "kubernetes_ca_cert": self_signed_ca(),  # required, unused over http
                "disable_local_ca_jwt": True,
            },
        )
        client.write_data(
            "auth/kubernetes/role/atlas-broker",
            data={
                "bound_service_account_names": ["atlas-broker"],
                "bound_service_account_namespaces": ["payments"],
                "token_policies": ["atlas-broker"],
                "token_ttl": "60s",
            },
        )
        broker = stack.start_broker(
            BROKER_VAULT_TOKEN="",
            BROKER_VAULT_K8S_ROLE="atlas-broker",
            BROKER_VAULT_K8S_TOKEN_PATH=str(token_file),
        )
        response = stack.get_token(broker.url, stack.new_realm().name)
        reviews = api.reviews
    assert 200 == response.status_code, response.text
    assert reviews >= 1
