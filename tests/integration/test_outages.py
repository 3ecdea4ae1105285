"""Dependencies failing under a running broker: Redis, the IdP, Vault. Real processes,
stopped and started by the tests."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from atlas_broker_dev.servers import start_openbao, start_redis
from broker.core.backoff import max_attempts
from polling import wait_for
from stack import Stack


@pytest.fixture
def token_lifetime(stack: Stack, request: pytest.FixtureRequest) -> Iterator[int]:
    lifetime: int = request.param
    with stack.token_lifetime(lifetime):
        yield lifetime


def test_redis_outage_serves_from_memory_and_sharing_resumes(stack: Stack) -> None:
    """Redis killed with a token cached: 100 requests succeed; Redis back (empty): a second
    replica gets the same token without an IdP request."""
    own = start_redis(stack.log_dir, name="redis-outage")
    stack.processes.append(own.process)
    first, second = stack.start_brokers(2, BROKER_REDIS_URL=own.url)
    realm = stack.new_realm()
    token = stack.get_token(first.url, realm.name).json()["access_token"]

    own.process.stop()
    statuses = [stack.get_token(first.url, realm.name).status_code for _ in range(100)]
    assert [200] * 100 == statuses
    ready = httpx.get(f"{first.url}/readyz")
    assert (200, "failing") == (ready.status_code, ready.json()["checks"]["redis"])

    restarted = start_redis(stack.log_dir, name="redis-outage-2", port=own.port)
    stack.processes.append(restarted.process)
    client = redis.Redis.from_url(restarted.url)
    wait_for(
        lambda: any(k.endswith(f":token:{{{realm.name}}}".encode()) for k in client.keys("*")),
        timeout=20,
        message="the first replica did not share its token again after Redis returned",
    )
    assert token == stack.get_token(second.url, realm.name).json()["access_token"]
    assert 1 == stack.idp_requests(realm.name)


@pytest.mark.parametrize("token_lifetime", [10], indirect=True)
def test_idp_outage_backs_off_across_replicas_and_recovers(
    stack: Stack, token_lifetime: int
) -> None:
    """IdP down for 60 s under three replicas: the cached token is served while valid, then
    503 with Retry-After; IdP requests stay within the shared backoff schedule; service
    recovers without a restart."""
    base, cap, window = 1.0, 8.0, 60.0
    replicas = stack.start_brokers(
        3,
        BROKER_EXPIRY_SKEW="1",
        BROKER_IDP_TIMEOUT="1",
        BROKER_IDP_BACKOFF_BASE=str(base),
        BROKER_IDP_BACKOFF_MAX=str(cap),
    )
    realm = stack.new_realm()
    token = stack.get_token(replicas[0].url, realm.name, min_ttl=0).json()["access_token"]
    stack.set_fault(realm.name, "hang")
    before = stack.idp_requests(realm.name)
    outage_started = time.monotonic()
    statuses: list[int] = []
    retry_afters: list[str] = []
    served_during_validity = []
    with httpx.Client(timeout=10) as client:
        i = 0
        while time.monotonic() - outage_started < window:
            response = client.get(
                f"{replicas[i % 3].url}/v1/realms/{realm.name}/token",
                params={"min_ttl": 0},
                headers={"Authorization": f"Bearer {stack.keys.everything}"},
            )
            stack.served_tokens(response)
            statuses.append(response.status_code)
            if (
                response.status_code == 200
                and time.monotonic() - outage_started < token_lifetime - 4
            ):
                served_during_validity.append(response.json()["access_token"])
            if response.status_code == 503:
                retry_afters.append(response.headers.get("retry-after", ""))
            i += 1
            time.sleep(0.1)
    attempts = stack.idp_requests(realm.name) - before
    stack.idp_control("DELETE", "/faults")

    assert served_during_validity
    assert {token} == set(served_during_validity)
    assert 503 in statuses
    assert all(value.isdigit() for value in retry_afters)
    assert set(statuses) <= {200, 503}
    # One attempt may be in flight at each edge of the window.
    assert attempts <= max_attempts(window, base=base, cap=cap) + 1
    wait_for(
        lambda: stack.get_token(replicas[1].url, realm.name, min_ttl=0).status_code == 200,
        timeout=cap + 10,
        message="the broker did not recover after the IdP came back",
    )


@pytest.mark.parametrize("token_lifetime", [4], indirect=True)
def test_vault_stopped_after_start_up_keeps_issuing_and_refreshing(
    stack: Stack, token_lifetime: int
) -> None:
    """With Vault gone after the first fetch, tokens keep being issued and refreshed."""
    bao = start_openbao(stack.log_dir, root_token="vault-outage-root-token")
    stack.processes.append(bao.process)
    stack.leak_watch.add("vault-outage-root-token")
    broker = stack.start_broker(
        BROKER_VAULT_ADDR=bao.addr,
        BROKER_VAULT_TOKEN=bao.root_token,
        BROKER_EXPIRY_SKEW="1",
        BROKER_REFRESH_BEFORE="2",
    )
    realm = stack.new_realm(in_vault=False)
    bao.write_realm(
        realm.name, {"client_id": realm.client_id, "client_secret": realm.client_secret}
    )
    first = stack.get_token(broker.url, realm.name, min_ttl=1).json()["access_token"]
    bao.process.stop()
    tokens = set()
    deadline = time.monotonic() + 3 * token_lifetime
    while time.monotonic() < deadline:
        response = stack.get_token(broker.url, realm.name, min_ttl=1)
        assert 200 == response.status_code, response.text
        tokens.add(response.json()["access_token"])
        time.sleep(0.1)
    assert len(tokens - {first}) >= 2  # refreshed at least twice without Vault
    assert "ready" == httpx.get(f"{broker.url}/readyz").json()["status"]
