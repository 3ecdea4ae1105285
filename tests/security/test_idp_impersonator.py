"""Attacker position: an identity provider that is not the configured one.

The impersonator runs a complete IdP (token endpoint, JWKS, its own signing keys) on an
origin the operator did not configure. Whatever points the broker at it (a realm's
`token_url` in Vault), its tokens must never be served or cached, its keys never
trusted, and the realm's client secret never sent to it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from atlas_broker_dev.processes import free_port
from atlas_broker_dev.servers import DevIdP, start_dev_idp
from broker.core.rules import token_key
from stack import Realm, Stack
from threaded_server import ThreadedServer
from workload_issuer import SigningKey, WorkloadIssuer

TOKEN_PATH = "/auth/realms/{realm}/protocol/openid-connect/token"


@pytest.fixture(scope="module")
def impersonator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevIdP]:
    """A second, fully working IdP on loopback with signing keys of its own."""
    directory: Path = tmp_path_factory.mktemp("impersonator")
    config = directory / "idp.yaml"
    config.write_text(yaml.safe_dump({"token_lifetime": 3600, "realms": {}}))
    server = start_dev_idp(directory, config=config, name="impersonator")
    yield server
    server.process.stop()


def realm_sent_to(stack: Stack, impersonator: DevIdP) -> Realm:
    """A realm whose Vault secret names the impersonator's token endpoint, with the
    client registered there too (so it would answer with a well-signed token)."""
    realm = stack.new_realm("impersonated", in_vault=False)
    impersonator.control(
        "PUT",
        f"/realms/{realm.name}/clients/{realm.client_id}",
        json={"client_secret": realm.client_secret},
    )
    stack.openbao.write_realm(
        realm.name,
        {
            "client_id": realm.client_id,
            "client_secret": realm.client_secret,
            "token_url": impersonator.url + TOKEN_PATH.format(realm=realm.name),
        },
    )
    return realm


def stored(stack: Stack, prefix: str, realm: str) -> bytes | None:
    value: bytes | None = redis.Redis.from_url(stack.redis.url).get(token_key(prefix, realm))
    return value


def test_token_from_an_impersonating_idp_is_never_served_or_cached(
    stack: Stack, impersonator: DevIdP
) -> None:
    """Pointed at another IdP through Vault, the broker asks it nothing, takes no JWKS
    or issuer from it, serves no token of its and caches none."""
    prefix = "impersonated"
    broker = stack.start_broker(BROKER_KEY_PREFIX=prefix)
    realm = realm_sent_to(stack, impersonator)

    response = stack.get_token(broker.url, realm.name)

    assert 502 == response.status_code
    assert 0 == impersonator.token_requests(realm.name)
    assert stored(stack, prefix, realm.name) is None


def test_token_not_signed_by_the_realm_key_is_refused_and_not_cached(stack: Stack) -> None:
    """A token from the configured IdP whose signature the realm's JWKS does not confirm
    is a 502 and is never cached: the next request fetches a good one."""
    prefix = "forged"
    broker = stack.start_broker(BROKER_KEY_PREFIX=prefix)
    realm = stack.new_realm("forged")
    stack.set_fault(realm.name, "bad_signature", count=1)

    refused = stack.get_token(broker.url, realm.name)

    assert 502 == refused.status_code
    assert stored(stack, prefix, realm.name) is None


class PointingIdP:
    """The configured IdP's stand-in: its JWKS publishes its own key, but the tokens it
    hands out are signed with the impersonator's key and name the impersonator's JWKS
    (`jku`, `x5u`) and issuer."""

    def __init__(self, impersonator: WorkloadIssuer, *, kid: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.own_key = SigningKey.rsa()
        self.impersonator = impersonator
        self.kid = kid
        self.token_requests = 0
        self._server: ThreadedServer | None = None

    def _token(self, realm: str) -> str:
        now = int(time.time())
        claims = {"iss": self.impersonator.issuer, "sub": "atlas", "iat": now, "exp": now + 3600}
        headers = {
            "kid": self.kid,
            "jku": self.impersonator.jwks_url,
            "x5u": self.impersonator.jwks_url,
        }
        signer = self.impersonator.key
        return jwt.encode(claims, signer.private_key, algorithm=signer.alg, headers=headers)

    def start(self) -> PointingIdP:
        async def token(request: Request) -> JSONResponse:
            self.token_requests += 1
            body: dict[str, Any] = {
                "access_token": self._token(request.path_params["realm"]),
                "token_type": "Bearer",
                "expires_in": 3600,
            }
            return JSONResponse(body)

        async def certs(request: Request) -> JSONResponse:
            return JSONResponse({"keys": [self.own_key.public_jwk()]})

        base = "/auth/realms/{realm}/protocol/openid-connect"
        app = Starlette(
            routes=[
                Route(f"{base}/token", token, methods=["POST"]),
                Route(f"{base}/certs", certs),
            ]
        )
        self._server = ThreadedServer(app, name="stand-in IdP", port=self.port).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()


@pytest.mark.parametrize("kid", ["impersonator", "configured"])
def test_token_naming_foreign_keys_is_refused_and_not_cached(stack: Stack, kid: str) -> None:
    """A token from the configured IdP signed with a foreign key, whose header points at
    the foreign JWKS (`jku`, `x5u`) and whose issuer is foreign, is a 502; the foreign
    JWKS is never fetched and nothing is cached (the key id being the foreign key's or
    the configured key's makes no difference)."""
    impersonator = WorkloadIssuer().start()
    idp: PointingIdP | None = None
    try:
        idp = PointingIdP(impersonator, kid=impersonator.key.kid)
        if kid == "configured":
            idp.kid = idp.own_key.kid
        idp.start()
        prefix = f"foreign-keys-{kid}"
        broker = stack.start_broker(BROKER_KEY_PREFIX=prefix, BROKER_IDP_URL=idp.url)
        realm = stack.new_realm("pointing")

        response = stack.get_token(broker.url, realm.name)

        assert (502, 1) == (response.status_code, idp.token_requests)
        assert 0 == impersonator.jwks_requests
        assert stored(stack, prefix, realm.name) is None
    finally:
        if idp is not None:
            idp.stop()
        impersonator.stop()
