"""Attacker position: anyone who makes the broker write audit events (every request,
refusals included) while Redis is slow, away or shared.

The trail must not grow without bound, in Redis, on the broker's disk or in its memory,
and what cannot be kept must be said out loud, never dropped silently.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from atlas_broker_dev.servers import RedisServer, start_redis
from polling import wait_for
from stack import Stack, bearer


@pytest.fixture
def doomed_redis(stack: Stack) -> Iterator[RedisServer]:
    """A Redis of this test's own, for the test to kill (and start again)."""
    server = start_redis(stack.log_dir, name="redis-doomed")
    yield server
    server.process.stop()


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{name} not exported"
    return float(match.group(1))


def spool_bytes(directory: Path) -> list[int]:
    return [path.stat().st_size for path in directory.glob("*.spool")]


def logged(stack: Stack, name: str, level: str, text: str) -> bool:
    path = next(p for p in stack.processes if p.name == name).log_path
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("level") == level and text in str(entry.get("event")):
                return True
    return False


def test_audit_stream_length_is_capped(stack: Stack) -> None:
    """With BROKER_AUDIT_MAX_EVENTS=100, 400 issuances leave about 100 entries in the
    stream (approximate trimming: at most one stream node, 100 entries, more)."""
    prefix = f"capped-{uuid.uuid4().hex[:6]}"
    broker = stack.start_broker(BROKER_KEY_PREFIX=prefix, BROKER_AUDIT_MAX_EVENTS="100")
    realm = stack.new_realm()
    for _ in range(400):
        assert 200 == stack.get_token(broker.url, realm.name).status_code
    client = redis.Redis.from_url(stack.redis.url)

    wait_for(
        lambda: client.xlen(f"{prefix}:audit") >= 100,
        timeout=10,
        message="the audit stream was not written",
    )
    stack.get_token(broker.url, realm.name)  # one more batch, trimmed like the others

    assert 100 <= client.xlen(f"{prefix}:audit") <= 200


def test_full_spool_refuses_issuance_when_the_trail_is_required(
    stack: Stack, doomed_redis: RedisServer
) -> None:
    """Redis gone and the spool at BROKER_AUDIT_SPOOL_MAX_BYTES: with BROKER_AUDIT_REQUIRED
    issuance is refused with 503, the spool stays under its cap, and it is loud (an error
    log line, the spool-full metric)."""
    spool = stack.log_dir / f"spool-{uuid.uuid4().hex[:6]}"
    broker = stack.start_broker(
        name="broker-required",
        BROKER_REDIS_URL=doomed_redis.url,
        BROKER_AUDIT_REQUIRED="true",
        BROKER_AUDIT_SPOOL_DIR=str(spool),
        BROKER_AUDIT_SPOOL_MAX_BYTES="4096",
    )
    realm = stack.new_realm()
    assert 200 == stack.get_token(broker.url, realm.name).status_code
    doomed_redis.process.stop()

    statuses = [stack.get_token(broker.url, realm.name).status_code for _ in range(40)]

    assert 503 in statuses
    assert 200 in statuses  # the spool took events until it was full
    assert all(size <= 4096 for size in spool_bytes(spool))
    assert 1.0 == metric(broker.url, "atlas_broker_audit_spool_full")
    wait_for(
        lambda: logged(stack, "broker-required", "error", "audit spool full"),
        timeout=10,
        message="no error log line about the full spool",
    )


def test_events_that_fit_nowhere_are_counted_never_silent(
    stack: Stack, doomed_redis: RedisServer
) -> None:
    """Redis gone, spool full and the in-memory backlog at its bound: further events are
    dropped from the trail of record, each one counted; once Redis is back the stream
    holds every event of the audit copy except exactly the counted ones."""
    prefix = f"bounded-{uuid.uuid4().hex[:6]}"
    broker = stack.start_broker(
        name="broker-bounded",
        BROKER_KEY_PREFIX=prefix,
        BROKER_REDIS_URL=doomed_redis.url,
        BROKER_AUDIT_SPOOL_DIR=str(stack.log_dir / f"spool-{prefix}"),
        BROKER_AUDIT_SPOOL_MAX_BYTES="4096",
        BROKER_AUDIT_BACKLOG_MAX_EVENTS="20",
    )
    realm = stack.new_realm()
    assert 200 == stack.get_token(broker.url, realm.name).status_code
    doomed_redis.process.stop()

    request_ids = {uuid.uuid4().hex for _ in range(100)}
    for request_id in request_ids:
        response = httpx.get(
            f"{broker.url}/v1/realms/{realm.name}/token",
            headers={**bearer(stack.keys.everything), "X-Request-ID": request_id},
            timeout=30,
        )
        assert 200 == response.status_code
    dropped = metric(broker.url, "atlas_broker_audit_events_dropped_total")
    assert dropped > 0
    wait_for(
        lambda: logged(stack, "broker-bounded", "error", "audit events dropped"),
        timeout=10,
        message="no error log line about dropped events",
    )

    # The first Redis kept nothing on disk: count the events of these requests only.
    revived = start_redis(stack.log_dir, name="redis-doomed-again", port=doomed_redis.port)
    try:
        client = redis.Redis.from_url(doomed_redis.url)

        def accounted() -> bool:
            entries = client.xrange(f"{prefix}:audit")
            in_stream = [json.loads(fields[b"e"]).get("request_id") for _, fields in entries]
            copies = [e.get("request_id") for e in stack.audit_events(broker.process)]
            return len(request_ids) == len([r for r in copies if r in request_ids]) and (
                len([r for r in in_stream if r in request_ids]) + dropped == len(request_ids)
            )

        wait_for(
            accounted,
            timeout=30,
            message="the stream and the dropped count do not account for every event",
        )
    finally:
        revived.process.stop()
