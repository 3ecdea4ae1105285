"""`GET /v1/realms`: a caller's own realms; for auditors and admins every realm with its
status."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from atlas_broker_dev.servers import BrokerServer
from callers import PolicyWriter, policy_path, written_policy
from stack import Realm, Stack, bearer


class Keys:
    def __init__(self, policy: PolicyWriter) -> None:
        self.listed = policy.key_caller("listed", realms=("acme", "globex"))
        self.everything = policy.key_caller("everything", realms=("*",))
        self.auditor = policy.key_caller("auditor", roles=("auditor",))
        self.admin = policy.key_caller("admin", roles=("admin",), realms=("*",))


@pytest.fixture(scope="module")
def keys(module_stack: Stack) -> Keys:
    return written_policy(module_stack, Keys)


@pytest.fixture(scope="module")
def broker(module_stack: Stack, keys: Keys) -> BrokerServer:
    return module_stack.start_broker(BROKER_POLICY_FILE=str(policy_path(module_stack)))


@pytest.fixture(scope="module")
def realms(module_stack: Stack) -> list[Realm]:
    return [module_stack.new_realm("listing") for _ in range(2)]


def listing(broker: BrokerServer, key: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{broker.url}/v1/realms", headers=bearer(key), timeout=10)
    assert 200 == response.status_code, response.text
    entries: list[dict[str, Any]] = response.json()["realms"]
    return entries


def test_plain_caller_sees_the_realms_it_lists(broker: BrokerServer, keys: Keys) -> None:
    """A caller with an explicit realms list sees exactly those names, nothing more."""
    assert [{"realm": "acme"}, {"realm": "globex"}] == listing(broker, keys.listed)


def test_wildcard_caller_sees_the_realms_in_vault(
    broker: BrokerServer, keys: Keys, realms: list[Realm]
) -> None:
    """A caller allowed "*" sees every realm with credentials in Vault, names only."""
    entries = listing(broker, keys.everything)
    assert ({r.name for r in realms} <= {e["realm"] for e in entries}, {"realm"}) == (
        True,
        {key for entry in entries for key in entry},
    )


def test_auditor_sees_every_realm_with_its_status(
    broker: BrokerServer, keys: Keys, realms: list[Realm]
) -> None:
    """An auditor's listing holds each Vault realm with all status fields."""
    entries = {e["realm"]: e for e in listing(broker, keys.auditor)}
    assert {
        "realm": realms[0].name,
        "cached": False,
        "expires_at": None,
        "last_refresh": None,
        "credential_version": None,
        "last_error": None,
        "verify": None,  # the realm's secret was not read yet
        "status": "ok",
        "rejected_version": None,
    } == entries[realms[0].name]


def test_status_shows_the_cached_token_and_credential_version(
    module_stack: Stack, broker: BrokerServer, keys: Keys, realms: list[Realm]
) -> None:
    """After a token was served, the realm is cached with its expiry, refresh time and the
    Vault version of its credentials."""
    response = httpx.get(
        f"{broker.url}/v1/realms/{realms[1].name}/token",
        headers=bearer(keys.everything),
        timeout=30,
    )
    module_stack.served_tokens(response)
    entry = {e["realm"]: e for e in listing(broker, keys.admin)}[realms[1].name]
    assert (True, response.json()["expires_at"], 1, None) == (
        entry["cached"],
        entry["expires_at"],
        entry["credential_version"],
        entry["last_error"],
    )
    assert entry["last_refresh"] is not None


def test_listing_needs_a_credential(broker: BrokerServer) -> None:
    """Without a credential the listing is 401."""
    assert 401 == httpx.get(f"{broker.url}/v1/realms").status_code
