"""Per-caller rate limits: a burst, then 429 with Retry-After; shared by the replicas
through Redis, taken before the realm is looked at, audited as refusals."""

from __future__ import annotations

import time

import httpx
import pytest

from atlas_broker_dev.processes import free_port
from atlas_broker_dev.servers import BrokerServer
from audit_helpers import wait_for_stream
from callers import PolicyWriter, policy_path, written_policy
from polling import wait_for
from stack import Realm, Stack, bearer

PREFIX = "ratelimit-module"
SLOW = {"per_second": 0.1}  # refills one request per ten seconds: nothing refills mid-test


class Keys:
    def __init__(self, policy: PolicyWriter) -> None:
        every = ("*",)
        self.bursty = policy.key_caller("bursty", realms=every, rate_limit={**SLOW, "burst": 3})
        self.audited = policy.key_caller("audited", realms=every, rate_limit={**SLOW, "burst": 1})
        self.early = policy.key_caller("early", realms=every, rate_limit={**SLOW, "burst": 1})
        self.shared = policy.key_caller("shared", realms=every, rate_limit={**SLOW, "burst": 4})
        self.defaulted = policy.key_caller("defaulted", realms=every)
        self.refilled = policy.key_caller(
            "refilled", realms=every, rate_limit={"per_second": 5, "burst": 1}
        )
        policy.default_rate_limit = {**SLOW, "burst": 2}


@pytest.fixture(scope="module")
def keys(module_stack: Stack) -> Keys:
    return written_policy(module_stack, Keys)


@pytest.fixture(scope="module")
def replicas(module_stack: Stack, keys: Keys) -> list[BrokerServer]:
    return module_stack.start_brokers(
        2, BROKER_KEY_PREFIX=PREFIX, BROKER_POLICY_FILE=str(policy_path(module_stack))
    )


@pytest.fixture(scope="module")
def realm(module_stack: Stack) -> Realm:
    return module_stack.new_realm("limited")


def ask(
    stack: Stack, broker: BrokerServer, realm: str, key: str, request_id: str | None = None
) -> httpx.Response:
    headers = {**bearer(key), **({"X-Request-ID": request_id} if request_id else {})}
    response = httpx.get(f"{broker.url}/v1/realms/{realm}/token", headers=headers, timeout=30)
    stack.served_tokens(response)
    return response


def test_burst_then_429_with_retry_after(
    module_stack: Stack, replicas: list[BrokerServer], realm: Realm, keys: Keys
) -> None:
    """A caller with burst 3 gets three tokens at once, then 429 problem+json with the
    seconds until its next request in Retry-After."""
    responses = [ask(module_stack, replicas[0], realm.name, keys.bursty) for _ in range(4)]
    refused = responses[-1]
    # One request per 10 s: the wait is at most 10 s, less by the time the burst took.
    assert ([200, 200, 200, 429], "application/problem+json", True) == (
        [r.status_code for r in responses],
        refused.headers["content-type"],
        refused.headers["retry-after"] in {str(n) for n in range(1, 11)},
    )


def test_rate_limited_request_is_audited_as_denied(
    module_stack: Stack, replicas: list[BrokerServer], realm: Realm, keys: Keys
) -> None:
    """A 429 leaves token.denied with reason rate-limited, the caller and the realm."""
    ask(module_stack, replicas[0], realm.name, keys.audited)
    assert 429 == ask(module_stack, replicas[0], realm.name, keys.audited, "limited-1").status_code
    events = wait_for_stream(
        module_stack.redis.url,
        PREFIX,
        lambda es: any(e.get("request_id") == "limited-1" for e in es),
    )
    assert [("token.denied", "rate-limited", "audited", realm.name)] == [
        (e["event"], e["reason"], e["caller"], e["realm"])
        for e in events
        if e.get("request_id") == "limited-1"
    ]


def test_limit_is_taken_before_the_realm_is_looked_at(
    module_stack: Stack, replicas: list[BrokerServer], keys: Keys
) -> None:
    """Past its limit a caller gets 429 even for a realm that does not exist (not 404)."""
    first = ask(module_stack, replicas[0], "no-such-realm-here", keys.early)
    second = ask(module_stack, replicas[0], "no-such-realm-here", keys.early)
    assert (404, 429) == (first.status_code, second.status_code)


def test_limit_is_shared_across_replicas(
    module_stack: Stack, replicas: list[BrokerServer], realm: Realm, keys: Keys
) -> None:
    """Requests spread over two replicas share one allowance: burst 4 means four tokens
    in all, not four per replica."""
    statuses = [
        ask(module_stack, replicas[i % 2], realm.name, keys.shared).status_code for i in range(8)
    ]
    assert [200] * 4 + [429] * 4 == statuses


def test_default_rate_limit_applies_to_callers_without_one(
    module_stack: Stack, replicas: list[BrokerServer], realm: Realm, keys: Keys
) -> None:
    """A caller with no rate_limit of its own gets the policy's default_rate_limit."""
    statuses = [
        ask(module_stack, replicas[0], realm.name, keys.defaulted).status_code for _ in range(3)
    ]
    assert [200, 200, 429] == statuses


def test_allowance_refills_at_the_rate(
    module_stack: Stack, replicas: list[BrokerServer], realm: Realm, keys: Keys
) -> None:
    """After a refusal the caller is served again once 1 / per_second has passed."""
    ask(module_stack, replicas[0], realm.name, keys.refilled)
    refused_at = time.monotonic()
    assert 429 == ask(module_stack, replicas[0], realm.name, keys.refilled).status_code
    wait_for(
        lambda: ask(module_stack, replicas[0], realm.name, keys.refilled).status_code == 200,
        timeout=5,
        message="still refused",
    )
    assert time.monotonic() - refused_at >= 0.1


def test_without_redis_each_replica_limits_on_its_own(stack: Stack) -> None:
    """With Redis unreachable the limit still holds, counted in process."""
    policy = PolicyWriter(stack.log_dir / "policy.yaml", stack.leak_watch)
    key = policy.key_caller("alone", realms=("*",), rate_limit={**SLOW, "burst": 2})
    broker = stack.start_broker(
        BROKER_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        BROKER_POLICY_FILE=str(policy.write()),
    )
    realm = stack.new_realm("alone")
    assert [200, 200, 429] == [ask(stack, broker, realm.name, key).status_code for _ in range(3)]
