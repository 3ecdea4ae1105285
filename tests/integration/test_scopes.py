"""Scopes per caller against real processes: one token per realm and scope set, and a
scope the policy does not allow refused before anything reaches the IdP."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest

from atlas_broker_dev.stack import Caller, write_policy
from stack import Stack, bearer, wait_for


@pytest.fixture
def keys(stack: Stack, tmp_path: Path) -> dict[str, str]:
    """A policy with a caller allowed `reports.read` and one allowed only default tokens."""
    keys = {name: secrets.token_urlsafe(32) for name in ("reporting", "billing")}
    stack.leak_watch.add(*keys.values())
    path = write_policy(
        tmp_path / "policy.yaml",
        [
            Caller("reporting", keys["reporting"], realms=["*"]),
            Caller("billing", keys["billing"], realms=["*"]),
            Caller("secops", stack.keys.admin, realms=["*"], roles=["admin"]),
        ],
    )
    text = path.read_text().replace(
        "name: reporting\n", "name: reporting\n  scopes: [reports.read]\n"
    )
    path.write_text(text)
    keys["policy_file"] = str(path)
    return keys


def fetched(stack: Stack, process: object, realm: str) -> list[str | None]:
    return sorted(
        (
            e.get("scope")
            for e in stack.audit_events(process)  # type: ignore[arg-type]
            if e["event"] == "token.fetched" and e["realm"] == realm
        ),
        key=str,
    )


def test_scoped_and_default_tokens_of_one_realm_are_fetched_once_each(
    stack: Stack, keys: dict[str, str]
) -> None:
    """A caller gets a `reports.read` token while another gets the realm's default token;
    asked three times each, the IdP sees one request per scope set."""
    broker = stack.start_broker(BROKER_POLICY_FILE=keys["policy_file"])
    realm = stack.new_realm(scopes=["openid", "reports.read", "reports.write"])
    url = f"{broker.url}/v1/realms/{realm.name}/token"
    with httpx.Client(timeout=30) as client:
        scoped = [
            client.get(url, params={"scope": "reports.read"}, headers=bearer(keys["reporting"]))
            for _ in range(3)
        ]
        plain = [client.get(url, headers=bearer(keys["billing"])) for _ in range(3)]
    for response in scoped + plain:
        stack.served_tokens(response)

    assert [200] * 6 == [r.status_code for r in scoped + plain]
    assert {"reports.read"} == {r.json()["scope"] for r in scoped}
    assert {scoped[0].json()["access_token"]} == {r.json()["access_token"] for r in scoped}
    assert scoped[0].json()["access_token"] != plain[0].json()["access_token"]
    assert (2, [None, "reports.read"]) == (
        stack.idp_requests(realm.name),
        fetched(stack, broker.process, realm.name),
    )


def test_forbidden_scope_is_refused_before_any_idp_request(
    stack: Stack, keys: dict[str, str]
) -> None:
    """A scope outside the caller's policy entry is 403 and audited, and the IdP is never
    asked, on the v1 endpoint and on the drop-in endpoint (invalid_scope)."""
    broker = stack.start_broker(BROKER_POLICY_FILE=keys["policy_file"])
    realm = stack.new_realm(scopes=["reports.read", "reports.write"])

    v1 = httpx.get(
        f"{broker.url}/v1/realms/{realm.name}/token",
        params={"scope": "reports.write"},
        headers=bearer(keys["reporting"]),
        timeout=30,
    )
    dropin = httpx.post(
        f"{broker.url}/auth/realms/{realm.name}/protocol/openid-connect/token",
        data={"grant_type": "client_credentials", "scope": "reports.read"},
        auth=("billing", keys["billing"]),
        timeout=30,
    )

    denied = [
        (e["reason"], e.get("scope"))
        for e in stack.audit_events(broker.process)
        if e["event"] == "token.denied" and e.get("realm") == realm.name
    ]
    assert (403, 400, "invalid_scope") == (
        v1.status_code,
        dropin.status_code,
        dropin.json()["error"],
    )
    assert [("scope-not-allowed", "reports.write"), ("scope-not-allowed", "reports.read")] == denied
    assert 0 == stack.idp_requests(realm.name)


def test_scope_the_idp_refuses_is_a_400_naming_it(stack: Stack, keys: dict[str, str]) -> None:
    """An allowed scope the realm's IdP client may not have comes back as a 400 naming the
    scope (invalid_scope on the drop-in endpoint), not as a gateway error."""
    broker = stack.start_broker(BROKER_POLICY_FILE=keys["policy_file"])
    realm = stack.new_realm(scopes=["openid"])

    v1 = httpx.get(
        f"{broker.url}/v1/realms/{realm.name}/token",
        params={"scope": "reports.read"},
        headers=bearer(keys["reporting"]),
        timeout=30,
    )
    dropin = httpx.post(
        f"{broker.url}/auth/realms/{realm.name}/protocol/openid-connect/token",
        data={"grant_type": "client_credentials", "scope": "reports.read"},
        auth=("reporting", keys["reporting"]),
        timeout=30,
    )

    assert (400, "invalid-scope", True) == (
        v1.status_code,
        v1.json()["type"].rsplit("/", 1)[-1],
        "reports.read" in v1.json()["detail"],
    )
    assert (400, "invalid_scope") == (dropin.status_code, dropin.json()["error"])


def test_malformed_scope_is_a_422(stack: Stack, keys: dict[str, str]) -> None:
    """A scope with a quote is refused as a bad request before anything else."""
    broker = stack.start_broker(BROKER_POLICY_FILE=keys["policy_file"])
    realm = stack.new_realm()

    response = httpx.get(
        f"{broker.url}/v1/realms/{realm.name}/token",
        params={"scope": 'reports"read'},
        headers=bearer(keys["reporting"]),
        timeout=30,
    )

    assert (422, 0) == (response.status_code, stack.idp_requests(realm.name))


def test_eviction_on_one_replica_reaches_a_scoped_token_another_served(
    stack: Stack, keys: dict[str, str]
) -> None:
    """Evicting the realm on a replica that never served a scope set still drops the
    scoped token a peer holds (in its memory and in Redis)."""
    here, peer = stack.start_brokers(2, BROKER_POLICY_FILE=keys["policy_file"])
    realm = stack.new_realm(scopes=["reports.read"])

    def scoped(url: str) -> str:
        response = httpx.get(
            f"{url}/v1/realms/{realm.name}/token",
            params={"scope": "reports.read"},
            headers=bearer(keys["reporting"]),
            timeout=30,
        )
        stack.served_tokens(response)
        assert 200 == response.status_code, response.text
        token: str = response.json()["access_token"]
        return token

    before = scoped(peer.url)
    evicted = httpx.delete(
        f"{here.url}/v1/realms/{realm.name}/token", headers=bearer(stack.keys.admin), timeout=30
    )
    assert 204 == evicted.status_code
    # The peer hears of the eviction through Redis pub/sub, a moment after the answer.
    wait_for(
        lambda: scoped(peer.url) != before,
        timeout=10,
        message="the peer kept serving the evicted scoped token",
    )
