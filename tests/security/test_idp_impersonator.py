"""Attacker position: an identity provider that is not the configured one.

The impersonator runs a complete IdP (token endpoint, JWKS, its own signing keys) on an
origin the operator did not configure. Whatever points the broker at it (a realm's
`token_url` in Vault), its tokens must never be served or cached, its keys never
trusted, and the realm's client secret never sent to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from broker.core.rules import token_key
from broker.devstack.servers import DevIdP, start_dev_idp
from stack import Realm, Stack

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
