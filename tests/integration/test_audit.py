"""The audit trail against real servers: every request recorded once in the Redis stream,
in the one JSON shape; `GET /v1/audit` for auditors, with filters and pages."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
import redis

from atlas_broker_dev.servers import BrokerServer
from audit_helpers import stream_events, wait_for_stream, with_request_ids
from callers import PolicyWriter, policy_path, written_policy
from polling import read_until
from stack import CallerKeys, Stack, bearer

PREFIX = "audit-module"


class Keys:
    def __init__(self, policy: PolicyWriter) -> None:
        self.everything = policy.key_caller("svc-all", realms=("*",))
        self.limited = policy.key_caller("svc-limited", realms=(CallerKeys.LIMITED_REALM,))
        self.auditor = policy.key_caller("platform-audit", roles=("auditor",))
        self.admin = policy.key_caller("secops", roles=("admin",), realms=("*",))


@pytest.fixture(scope="module")
def keys(module_stack: Stack) -> Keys:
    return written_policy(module_stack, Keys)


@pytest.fixture(scope="module")
def broker(module_stack: Stack, keys: Keys) -> BrokerServer:
    return module_stack.start_broker(
        BROKER_KEY_PREFIX=PREFIX, BROKER_POLICY_FILE=str(policy_path(module_stack))
    )


def read_audit(broker: BrokerServer, key: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{broker.url}/v1/audit", params=params, headers=bearer(key), timeout=10)


def token_request(
    stack: Stack, broker: BrokerServer, realm: str, key: str, request_id: str
) -> httpx.Response:
    response = httpx.get(
        f"{broker.url}/v1/realms/{realm}/token",
        headers={**bearer(key), "X-Request-ID": request_id},
        timeout=30,
    )
    stack.served_tokens(response)
    return response


def settled(stack: Stack, request_ids: set[str]) -> list[dict[str, Any]]:
    """The stream's events for `request_ids`, once every one of them has arrived."""
    return wait_for_stream(
        stack.redis.url, PREFIX, lambda events: request_ids <= {e.get("request_id") for e in events}
    )


async def test_burst_leaves_exactly_one_record_per_request(
    module_stack: Stack, broker: BrokerServer, keys: Keys
) -> None:
    """200 concurrent successful and 50 refused requests leave exactly 200 token.issued and
    50 token.denied events, each with its caller, realm, request id and, for issued ones,
    the SHA-256 prefix of the very token served."""
    realm = module_stack.new_realm("burst")
    requests = [(f"burst-ok-{i}", keys.everything) for i in range(200)]
    requests += [(f"burst-no-{i}", keys.limited) for i in range(50)]
    limits = httpx.Limits(max_connections=250, max_keepalive_connections=250)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        responses = await asyncio.gather(
            *(
                client.get(
                    f"{broker.url}/v1/realms/{realm.name}/token",
                    headers={**bearer(key), "X-Request-ID": request_id},
                )
                for request_id, key in requests
            )
        )
    for response in responses:
        module_stack.served_tokens(response)
    assert Counter({200: 200, 403: 50}) == Counter(r.status_code for r in responses)
    served = {
        r.headers["x-request-id"]: hashlib.sha256(r.json()["access_token"].encode()).hexdigest()
        for r in responses
        if r.status_code == 200
    }

    events = with_request_ids(settled(module_stack, {rid for rid, _ in requests}), "burst-")

    expected = {(rid, "token.issued", "svc-all", realm.name, served[rid][:16]) for rid in served}
    expected |= {
        (f"burst-no-{i}", "token.denied", "svc-limited", realm.name, None) for i in range(50)
    }
    actual = [
        (e["request_id"], e["event"], e.get("caller"), e.get("realm"), e.get("token_sha256"))
        for e in events
    ]
    assert (250, expected) == (len(actual), set(actual))


def test_auditor_reads_the_trail_newest_first(
    module_stack: Stack, broker: BrokerServer, keys: Keys
) -> None:
    """An auditor gets the events of its requests back, the latest first."""
    realm = module_stack.new_realm("order")
    ids = [f"order-{i}" for i in range(3)]
    for rid in ids:
        token_request(module_stack, broker, realm.name, keys.everything, rid)
    settled(module_stack, set(ids))
    body = read_audit(broker, keys.auditor, realm=realm.name, event="token.issued").json()
    assert list(reversed(ids)) == [e["request_id"] for e in body["events"]]


def test_admin_reads_the_trail(broker: BrokerServer, keys: Keys) -> None:
    """The admin role implies the auditor role."""
    assert 200 == read_audit(broker, keys.admin, limit=1).status_code


def test_plain_caller_is_refused_the_trail(broker: BrokerServer, keys: Keys) -> None:
    """A caller without the auditor role gets 403 problem+json."""
    response = read_audit(broker, keys.everything)
    assert (403, "application/problem+json") == (
        response.status_code,
        response.headers["content-type"],
    )


def test_refused_trail_request_is_audited(
    module_stack: Stack, broker: BrokerServer, keys: Keys
) -> None:
    """A plain caller's attempt to read the trail is itself recorded as access.denied."""
    httpx.get(
        f"{broker.url}/v1/audit",
        headers={**bearer(keys.everything), "X-Request-ID": "peek-1"},
    )
    [event] = with_request_ids(settled(module_stack, {"peek-1"}), "peek-1")
    assert ("access.denied", "svc-all", "role-required") == (
        event["event"],
        event["caller"],
        event["reason"],
    )


def test_trail_without_credential_is_401(broker: BrokerServer) -> None:
    """No credential, no trail."""
    assert 401 == httpx.get(f"{broker.url}/v1/audit").status_code


def test_filters_select_realm_caller_and_event(
    module_stack: Stack, broker: BrokerServer, keys: Keys
) -> None:
    """realm, caller and event filters all apply together."""
    realm = module_stack.new_realm("filter")
    token_request(module_stack, broker, realm.name, keys.everything, "filter-ok")
    token_request(module_stack, broker, realm.name, keys.limited, "filter-no")
    settled(module_stack, {"filter-ok", "filter-no"})
    body = read_audit(
        broker, keys.auditor, realm=realm.name, caller="svc-limited", event="token.denied"
    ).json()
    assert ["filter-no"] == [e["request_id"] for e in body["events"]]


def test_since_and_until_bound_the_time(
    module_stack: Stack, broker: BrokerServer, keys: Keys
) -> None:
    """Only events with since <= time < until are returned."""
    realm = module_stack.new_realm("window")
    token_request(module_stack, broker, realm.name, keys.everything, "window-before")
    [before] = with_request_ids(settled(module_stack, {"window-before"}), "window-before")
    token_request(module_stack, broker, realm.name, keys.everything, "window-inside")
    [inside] = with_request_ids(settled(module_stack, {"window-inside"}), "window-inside")
    token_request(module_stack, broker, realm.name, keys.everything, "window-after")
    settled(module_stack, {"window-after"})
    body = read_audit(
        broker,
        keys.auditor,
        realm=realm.name,
        since=inside["time"],
        until=_after(inside["time"]),
    ).json()
    assert (["window-inside"], True) == (
        [e["request_id"] for e in body["events"]],
        before["time"] < inside["time"],
    )


def _after(iso: str) -> str:
    """One millisecond after an audit time."""
    from datetime import datetime, timedelta

    moment = datetime.fromisoformat(iso) + timedelta(milliseconds=1)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def test_cursor_pages_cover_the_trail_once(
    module_stack: Stack, broker: BrokerServer, keys: Keys
) -> None:
    """Following next_cursor with a small limit visits every event once, newest first."""
    realm = module_stack.new_realm("pages")
    ids = [f"pages-{i}" for i in range(7)]
    for rid in ids:
        token_request(module_stack, broker, realm.name, keys.everything, rid)
    settled(module_stack, set(ids))
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"realm": realm.name, "event": "token.issued", "limit": 3}
        body = read_audit(broker, keys.auditor, **params, **({"cursor": cursor} if cursor else {}))
        seen += [e["request_id"] for e in body.json()["events"]]
        cursor = body.json()["next_cursor"]
        if cursor is None:
            break
    assert list(reversed(ids)) == seen


@pytest.mark.parametrize(
    "params",
    [
        {"since": "yesterday"},
        {"since": "2026-11-27T19:00:00"},
        {"until": "2026-13-01T00:00:00Z"},
        {"since": "2026-11-28T00:00:00Z", "until": "2026-11-27T00:00:00Z"},
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "ten"},
        {"cursor": "not-a-cursor"},
        {"realm": "../etc"},
        {"event": "TOKEN ISSUED"},
    ],
)
def test_bad_query_is_422(broker: BrokerServer, keys: Keys, params: dict[str, str]) -> None:
    """Malformed times, an empty or inverted window, a bad limit, cursor, realm or event:
    422 problem+json."""
    response = read_audit(broker, keys.auditor, **params)
    assert (422, "application/problem+json") == (
        response.status_code,
        response.headers["content-type"],
    )


def test_stream_and_stdout_hold_the_same_record(
    module_stack: Stack, broker: BrokerServer, keys: Keys
) -> None:
    """The event in the Redis stream is the JSON line on stdout, field for field."""
    realm = module_stack.new_realm("shape")
    token_request(module_stack, broker, realm.name, keys.everything, "shape-1")
    [streamed] = with_request_ids(settled(module_stack, {"shape-1"}), "shape-1")
    printed = [
        e for e in module_stack.audit_events(broker.process) if e.get("request_id") == "shape-1"
    ]
    assert [streamed] == printed


def test_retention_trims_entries_older_than_the_window(stack: Stack) -> None:
    """An entry older than BROKER_AUDIT_RETENTION_DAYS is trimmed by the next write."""
    prefix = f"audit-retention-{uuid.uuid4().hex[:8]}"  # a new stream: old ids can go in
    with redis.Redis.from_url(stack.redis.url) as client:
        client.xadd(f"{prefix}:audit", {"e": json.dumps({"event": "ancient"})}, id="1000-0")
    broker = stack.start_broker(BROKER_KEY_PREFIX=prefix, BROKER_AUDIT_RETENTION_DAYS="1")
    realm = stack.new_realm("retention")
    token_request(stack, broker, realm.name, stack.keys.everything, "retention-1")
    events = wait_for_stream(
        stack.redis.url, prefix, lambda es: any(e.get("request_id") == "retention-1" for e in es)
    )
    assert [] == [e for e in events if e.get("event") == "ancient"]


def test_memory_store_serves_the_trail_from_memory(stack: Stack) -> None:
    """With memory:// the endpoint reads this process's recent events."""
    policy = PolicyWriter(stack.log_dir / "policy.yaml", stack.leak_watch)
    caller, auditor = (
        policy.key_caller("svc", realms=("*",)),
        policy.key_caller("audit", roles=("auditor",)),
    )
    broker = stack.start_broker(
        BROKER_REDIS_URL="memory://", BROKER_POLICY_FILE=str(policy.write())
    )
    realm = stack.new_realm("memory")
    token_request(stack, broker, realm.name, caller, "memory-1")
    body = read_audit(broker, auditor, event="token.issued").json()
    assert ["memory-1"] == [e["request_id"] for e in body["events"]]


def test_audit_file_receives_the_json_lines(stack: Stack) -> None:
    """BROKER_AUDIT_FILE gets one JSON object per line, the same as the stream holds."""
    prefix = "audit-file"
    audit_file = stack.log_dir / "audit.jsonl"
    broker = stack.start_broker(BROKER_AUDIT_FILE=str(audit_file), BROKER_KEY_PREFIX=prefix)
    realm = stack.new_realm("file")
    token_request(stack, broker, realm.name, stack.keys.everything, "file-1")
    streamed = wait_for_stream(
        stack.redis.url, prefix, lambda es: any(e.get("request_id") == "file-1" for e in es)
    )
    lines = read_until(
        lambda: [json.loads(line) for line in audit_file.read_text().splitlines()],
        lambda written: any(e.get("request_id") == "file-1" for e in written),
    )
    assert with_request_ids(streamed, "file-1") == with_request_ids(lines, "file-1")


def test_shutdown_flushes_every_event(stack: Stack) -> None:
    """Events emitted right before the broker stops are in the stream after it stopped."""
    prefix = "audit-flush"
    broker = stack.start_broker(BROKER_KEY_PREFIX=prefix)
    realm = stack.new_realm("flush")
    for i in range(20):
        token_request(stack, broker, realm.name, stack.keys.everything, f"flush-{i}")
    broker.process.stop()
    issued = [e for e in stream_events(stack.redis.url, prefix) if e["event"] == "token.issued"]
    assert {f"flush-{i}" for i in range(20)} == {e["request_id"] for e in issued}
