"""Attacker position: a caller with a valid credential (a stolen key, a compromised
service, a curious auditor) trying to reach beyond what its policy entry grants: other
realms' tokens, other realms' audit trail and status, admin operations, and doing so
without leaving a trace."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis

from atlas_broker_dev.servers import BrokerServer
from callers import PolicyWriter, policy_path, written_policy
from polling import wait_for
from stack import Realm, Stack, bearer


@dataclass
class Keys:
    everything: str
    scoped_auditor: str
    scoped_admin: str
    auditor: str


@pytest.fixture(scope="module")
def realms(module_stack: Stack) -> tuple[Realm, Realm]:
    """Two realms: the scoped roles' own, and another one."""
    return module_stack.new_realm("own"), module_stack.new_realm("other")


@pytest.fixture(scope="module")
def keys(module_stack: Stack, realms: tuple[Realm, Realm]) -> Keys:
    own, _ = realms

    def make(policy: PolicyWriter) -> Keys:
        return Keys(
            everything=policy.key_caller("svc-all", realms=("*",)),
            scoped_auditor=policy.key_caller("own-auditor", realms=(own.name,), roles=("auditor",)),
            scoped_admin=policy.key_caller("own-admin", realms=(own.name,), roles=("admin",)),
            auditor=policy.key_caller("all-auditor", realms=("*",), roles=("auditor",)),
        )

    return written_policy(module_stack, make)


@pytest.fixture(scope="module")
def broker(module_stack: Stack, keys: Keys, realms: tuple[Realm, Realm]) -> BrokerServer:
    server = module_stack.start_broker(BROKER_POLICY_FILE=str(policy_path(module_stack)))
    for realm in realms:  # one issued token per realm, so each has audit events and status
        assert 200 == module_stack.get_token(server.url, realm.name, keys.everything).status_code
    return server


def get(broker: BrokerServer, path: str, key: str, /, **params: Any) -> httpx.Response:
    return httpx.get(f"{broker.url}{path}", params=params, headers=bearer(key), timeout=30)


def test_a_scoped_auditor_reads_only_its_realms_events(
    broker: BrokerServer, keys: Keys, realms: tuple[Realm, Realm]
) -> None:
    """An auditor listing realm A reads the trail without a filter and sees A's events only."""
    own, other = realms
    response = get(broker, "/v1/audit", keys.scoped_auditor, limit=1000)
    seen = {event.get("realm") for event in response.json()["events"]}
    assert 200 == response.status_code
    assert own.name in seen
    assert {own.name} == seen, f"also saw {seen - {own.name}}"
    assert other.name not in seen


def test_a_scoped_auditor_asking_for_another_realm_is_403(
    broker: BrokerServer, keys: Keys, realms: tuple[Realm, Realm]
) -> None:
    """Filtering the trail on a realm outside the auditor's list is refused."""
    _, other = realms
    assert 403 == get(broker, "/v1/audit", keys.scoped_auditor, realm=other.name).status_code


def test_a_scoped_auditor_sees_only_its_realms_status(
    broker: BrokerServer, keys: Keys, realms: tuple[Realm, Realm]
) -> None:
    """`GET /v1/realms` gives a scoped auditor the status of its own realms only."""
    own, _ = realms
    listed = get(broker, "/v1/realms", keys.scoped_auditor).json()["realms"]
    assert [(own.name, True)] == [(entry["realm"], "cached" in entry) for entry in listed]


def test_an_unscoped_auditor_still_sees_every_realm(
    broker: BrokerServer, keys: Keys, realms: tuple[Realm, Realm]
) -> None:
    """An auditor with `*` sees the status of every realm."""
    listed = {entry["realm"] for entry in get(broker, "/v1/realms", keys.auditor).json()["realms"]}
    assert {realm.name for realm in realms} <= listed


def test_a_refused_admin_operation_is_audited(
    broker: BrokerServer, keys: Keys, realms: tuple[Realm, Realm]
) -> None:
    """An admin rotating a realm outside its list gets 403, and the refusal is in the trail
    with the caller and the realm, like every other refusal."""
    _, other = realms
    response = httpx.post(
        f"{broker.url}/v1/realms/{other.name}/rotate",
        headers={**bearer(keys.scoped_admin), "X-Request-ID": "refused-rotate-1"},
        timeout=30,
    )
    assert 403 == response.status_code
    records: list[dict[str, Any]] = []

    def recorded() -> bool:
        found = get(broker, "/v1/audit", keys.auditor, caller="own-admin").json()["events"]
        records[:] = [e for e in found if e.get("request_id") == "refused-rotate-1"]
        return bool(records)

    wait_for(recorded, timeout=10, message="the refused rotation was not audited")
    assert [("access.denied", "denied", other.name)] == [
        (e["event"], e["outcome"], e["realm"]) for e in records
    ]


def test_a_caller_past_its_rate_limit_cannot_flood_the_trail(stack: Stack) -> None:
    """500 requests of a caller allowed one a second leave a handful of audit entries: the
    first 429 of the minute on its own, the rest counted in one rate_limit.exceeded."""
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    key = written_policy(
        stack,
        lambda policy: policy.key_caller(
            "chatty", realms=("*",), rate_limit={"per_second": 1, "burst": 1}
        ),
    )
    broker = stack.start_broker(
        BROKER_KEY_PREFIX=prefix, BROKER_POLICY_FILE=str(policy_path(stack))
    )
    with httpx.Client(base_url=broker.url, headers=bearer(key), timeout=30) as client:
        statuses = [client.get("/v1/realms").status_code for _ in range(500)]
    broker.process.stop()  # the last minute's counts are written at shutdown
    entries = redis.Redis.from_url(stack.redis.url).xrange(f"{prefix}:audit")
    records = [json.loads(next(iter(fields.values()))) for _, fields in entries]
    refused = statuses.count(429)
    counted = sum(r.get("count", 1) for r in records if r["event"] != "credentials.loaded")
    print(f"audit entries for {refused} refusals past the rate limit: {len(records)}")
    assert refused > 400
    assert len(records) <= 6, [r["event"] for r in records[:10]]
    assert refused == counted
