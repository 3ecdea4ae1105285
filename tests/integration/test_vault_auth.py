"""Vault authentication over time: AppRole tokens expire and the broker logs in again."""

from __future__ import annotations

import time

import httpx
import hvac

from stack import Stack

BROKER_POLICY = """
path "secret/data/atlas/realms/*" { capabilities = ["read"] }
path "secret/metadata/atlas/realms/*" { capabilities = ["read", "list"] }
path "secret/metadata/atlas/realms" { capabilities = ["list"] }
path "secret/data/atlas/broker/cache-key" { capabilities = ["create", "read"] }
"""


def approle(client: hvac.Client, *, ttl: str, max_ttl: str) -> tuple[str, str]:
    """An AppRole whose tokens live `ttl` (renewable up to `max_ttl`): role_id, secret_id."""
    if "approle/" not in client.sys.list_auth_methods()["data"]:
        client.sys.enable_auth_method("approle")
    client.sys.create_or_update_policy(name="atlas-broker", policy=BROKER_POLICY)
    client.auth.approle.create_or_update_approle(
        role_name="atlas-broker",
        token_policies=["atlas-broker"],
        token_ttl=ttl,
        token_max_ttl=max_ttl,
    )
    role_id = client.auth.approle.read_role_id("atlas-broker")["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id("atlas-broker")["data"]["secret_id"]
    return role_id, secret_id


def test_approle_token_past_its_max_ttl_is_replaced_by_a_new_login(stack: Stack) -> None:
    """With AppRole tokens that die after 6 s, the broker still reads new realms from
    Vault 10 s later: it renewed, then logged in again."""
    role_id, secret_id = approle(stack.openbao.client(), ttl="3s", max_ttl="6s")
    stack.leak_watch.add(secret_id)
    broker = stack.start_broker(
        BROKER_VAULT_TOKEN="", BROKER_VAULT_ROLE_ID=role_id, BROKER_VAULT_SECRET_ID=secret_id
    )
    before = stack.new_realm()
    assert 200 == stack.get_token(broker.url, before.name).status_code
    time.sleep(10)  # the first login's token is past its max TTL now
    after = stack.new_realm()
    response = stack.get_token(broker.url, after.name)
    assert 200 == response.status_code, response.text
    assert "ok" == httpx.get(f"{broker.url}/readyz", timeout=10).json()["checks"]["vault"]
