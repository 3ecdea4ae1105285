"""A bad new secret in Vault against real processes: no request fails, the realm is
marked degraded (realm list, metric, audit) and keeps serving with the old secret."""

from __future__ import annotations

import httpx
from test_lifecycle import RequestStream

from stack import Realm, Stack, bearer, wait_for


def write_bad_secret(stack: Stack, realm: Realm) -> int:
    """A new version in Vault with a typo in the secret; the IdP still has the old one."""
    return stack.openbao.write_realm(
        realm.name, {"client_id": realm.client_id, "client_secret": realm.client_secret + "x"}
    )


def realm_entry(stack: Stack, url: str, realm: str) -> dict[str, object]:
    listed = httpx.get(f"{url}/v1/realms", headers=bearer(stack.keys.admin), timeout=30).json()
    return next(entry for entry in listed["realms"] if entry["realm"] == realm)


def test_bad_new_secret_in_vault_fails_no_request_and_degrades_the_realm(stack: Stack) -> None:
    """Under a live request stream, a new Vault version the IdP refuses fails no request;
    the realm shows as degraded in the realm list and the metric, and the refusal is
    audited with both versions."""
    broker = stack.start_broker(BROKER_VAULT_POLL_SECONDS="1")
    realm = stack.new_realm()
    assert 200 == stack.get_token(broker.url, realm.name).status_code

    with RequestStream(stack, broker.url, realm.name) as stream:
        bad = write_bad_secret(stack, realm)
        wait_for(
            lambda: realm_entry(stack, broker.url, realm.name).get("status") == "degraded",
            timeout=10,
            message="the realm was not marked degraded",
        )
    metrics = httpx.get(f"{broker.url}/metrics", timeout=30).text
    rejected = [
        (e["credential_version"], e["rejected_version"])
        for e in stack.audit_events(broker.process)
        if e["event"] == "credentials.rejected"
    ]

    assert ([], True) == (stream.failures, stream.served > 0)
    assert [(bad - 1, bad)] == rejected
    assert f'atlas_broker_realm_degraded{{realm="{realm.name}"}} 1.0' in metrics


def test_rotate_to_a_bad_secret_keeps_serving_with_the_old_one(stack: Stack) -> None:
    """The rotate operation drops the token and reads a secret the IdP refuses: the next
    token is fetched with the old secret, and the realm is degraded until Vault holds a
    secret the IdP accepts."""
    broker = stack.start_broker()
    realm = stack.new_realm()
    assert 200 == stack.get_token(broker.url, realm.name).status_code
    bad = write_bad_secret(stack, realm)

    rotated = httpx.post(
        f"{broker.url}/v1/realms/{realm.name}/rotate", headers=bearer(stack.keys.admin), timeout=30
    )
    served = stack.get_token(broker.url, realm.name)
    degraded = realm_entry(stack, broker.url, realm.name)
    good = stack.openbao.write_realm(
        realm.name, {"client_id": realm.client_id, "client_secret": realm.client_secret}
    )
    httpx.post(
        f"{broker.url}/v1/realms/{realm.name}/rotate", headers=bearer(stack.keys.admin), timeout=30
    )
    healed = realm_entry(stack, broker.url, realm.name)

    assert (200, 200) == (rotated.status_code, served.status_code)
    assert ("degraded", bad - 1, bad) == (
        degraded["status"],
        degraded["credential_version"],
        degraded["rejected_version"],
    )
    assert ("ok", good) == (healed["status"], healed["credential_version"])
