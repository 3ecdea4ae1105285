"""Least privilege in Vault: the broker runs on the policy docs/operations.md gives,
loaded as-is into OpenBao; it does its whole job with it (tokens, the cache key, rotation,
the version watch, renewing its own token), and the same token is refused everything
else, so a stolen broker token reads no other secret and writes none."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import hvac
import hvac.exceptions
import pytest

from atlas_broker_dev.servers import BrokerServer
from polling import wait_for
from stack import Realm, Stack, bearer
from vault_policy import documented_vault_policy

POLICY_NAME = "atlas-broker-documented"
CACHE_KEY = "atlas/broker/cache-key"
# Short enough that the broker must renew it while the test runs.
TOKEN_TTL = "10s"


@pytest.fixture
def policy_token(stack: Stack) -> Iterator[dict[str, Any]]:
    """A renewable token holding the documented policy and nothing else (not even
    `default`); yields its id and accessor."""
    root = stack.openbao.client()
    root.sys.create_or_update_policy(name=POLICY_NAME, policy=documented_vault_policy())
    created = root.auth.token.create(
        policies=[POLICY_NAME], no_default_policy=True, ttl=TOKEN_TTL, renewable=True
    )["auth"]
    stack.leak_watch.add(created["client_token"])
    yield created
    root.auth.token.revoke_accessor(created["accessor"])


@pytest.fixture
def broker(stack: Stack, policy_token: dict[str, Any]) -> BrokerServer:
    """A broker on the policy token, watching Vault versions every second, started with
    no cache key in Vault so that it has to create one."""
    root = stack.openbao.client()
    root.secrets.kv.v2.delete_metadata_and_all_versions(path=CACHE_KEY, mount_point="secret")
    return stack.start_broker(
        BROKER_VAULT_TOKEN=policy_token["client_token"], BROKER_VAULT_POLL_SECONDS="1"
    )


def new_secret(stack: Stack, realm: Realm) -> int:
    """Rotate the realm's client secret at the IdP and in Vault; the new Vault version."""
    realm.client_secret = secrets.token_urlsafe(24)
    stack.leak_watch.add(realm.client_secret)
    stack.idp_control(
        "PUT",
        f"/realms/{realm.name}/clients/{realm.client_id}",
        json={"client_secret": realm.client_secret},
    )
    return stack.openbao.write_realm(
        realm.name, {"client_id": realm.client_id, "client_secret": realm.client_secret}
    )


def realm_status(stack: Stack, broker: BrokerServer, realm: str) -> dict[str, Any]:
    response = httpx.get(f"{broker.url}/v1/realms", headers=bearer(stack.keys.admin), timeout=10)
    assert 200 == response.status_code, response.text
    statuses: dict[str, dict[str, Any]] = {e["realm"]: e for e in response.json()["realms"]}
    return statuses.get(realm, {})


def test_broker_issues_tokens_and_creates_its_cache_key(stack: Stack, broker: BrokerServer) -> None:
    """On the documented policy a token is issued and shared through Redis, which needs
    the cache key the broker created in Vault."""
    realm = stack.new_realm("policy")
    response = stack.get_token(broker.url, realm.name)
    assert 200 == response.status_code, response.text
    key = stack.openbao.client().secrets.kv.v2.read_secret_version(
        path=CACHE_KEY, mount_point="secret", raise_on_deleted_version=True
    )
    assert 1 == key["data"]["metadata"]["version"]


def test_rotation_rereads_the_secret(stack: Stack, broker: BrokerServer) -> None:
    """The rotate endpoint reads the realm's new secret version and fetches with it."""
    realm = stack.new_realm("policy-rotate")
    assert 200 == stack.get_token(broker.url, realm.name).status_code
    version = new_secret(stack, realm)
    response = httpx.post(
        f"{broker.url}/v1/realms/{realm.name}/rotate", headers=bearer(stack.keys.admin), timeout=30
    )
    assert 200 == response.status_code, response.text
    assert (version, True) == (response.json()["credential_version"], response.json()["cached"])


def test_version_watch_follows_a_new_secret(stack: Stack, broker: BrokerServer) -> None:
    """A new secret version written to Vault is picked up by the version watch, which
    reads the secret's metadata, and the realm's list shows it."""
    realm = stack.new_realm("policy-watch")
    assert 200 == stack.get_token(broker.url, realm.name).status_code
    version = new_secret(stack, realm)

    def loaded() -> dict[str, Any] | None:
        status = realm_status(stack, broker, realm.name)
        return status if status.get("credential_version") == version else None

    status = wait_for(loaded, timeout=30, message="the broker never loaded the new version")
    assert status is not None
    assert (True, None) == (status["cached"], status["last_error"])


def test_broker_renews_its_own_token(
    stack: Stack, broker: BrokerServer, policy_token: dict[str, Any]
) -> None:
    """The broker renews its short-lived token before it expires, and stays ready."""
    root = stack.openbao.client()

    def renewed() -> bool:
        info = root.auth.token.lookup_accessor(policy_token["accessor"])["data"]
        return bool(info.get("last_renewal_time"))

    wait_for(renewed, timeout=30, message="the broker never renewed its Vault token")
    ready = httpx.get(f"{broker.url}/readyz", timeout=10).json()
    assert "ok" == ready["checks"]["vault"]


@pytest.mark.parametrize(
    "attempt",
    [
        "read another prefix",
        "list the prefix",
        "write a realm secret",
        "replace the cache key",
        "read the mount's configuration",
    ],
)
def test_policy_denies_everything_else(
    stack: Stack, policy_token: dict[str, Any], attempt: str
) -> None:
    """With the broker's token, reads outside its paths and every write but the cache
    key's creation are refused by Vault."""
    root = stack.openbao.client()
    root.secrets.kv.v2.create_or_update_secret(
        path="elsewhere/realms/acme", secret={"client_secret": "x"}, mount_point="secret"
    )
    kv = hvac.Client(url=stack.openbao.addr, token=policy_token["client_token"]).secrets.kv.v2
    attempts = {
        "read another prefix": lambda: kv.read_secret_version(
            path="elsewhere/realms/acme", mount_point="secret", raise_on_deleted_version=True
        ),
        "list the prefix": lambda: kv.list_secrets(path="atlas", mount_point="secret"),
        "write a realm secret": lambda: kv.create_or_update_secret(
            path="atlas/realms/acme", secret={"client_secret": "x"}, mount_point="secret"
        ),
        "replace the cache key": lambda: kv.create_or_update_secret(
            path=CACHE_KEY, secret={"current": "k0"}, mount_point="secret"
        ),
        "read the mount's configuration": lambda: kv.read_configuration(mount_point="secret"),
    }
    ensure_cache_key(root)
    with pytest.raises(hvac.exceptions.Forbidden):
        attempts[attempt]()


def ensure_cache_key(root: hvac.Client) -> None:
    """A valid cache key in Vault, as a broker's first start leaves it."""
    key = base64.b64encode(os.urandom(32)).decode()
    with contextlib.suppress(hvac.exceptions.InvalidRequest):  # check-and-set: one exists
        root.secrets.kv.v2.create_or_update_secret(
            path=CACHE_KEY, secret={"current": "k1", "k1": key}, cas=0, mount_point="secret"
        )
