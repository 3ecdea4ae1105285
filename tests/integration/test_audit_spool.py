"""Audit events are never dropped: while Redis is away they go to the spool file, and
reach the stream once, in order, when it is back; BROKER_AUDIT_REQUIRED refuses to issue
without a durable record."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from atlas_broker_dev.processes import free_port, tcp_open
from atlas_broker_dev.servers import BrokerServer, RedisServer, start_redis
from audit_helpers import wait_for_stream, with_request_ids
from polling import read_until, wait_for
from stack import Stack, bearer


@pytest.fixture
def own_redis(stack: Stack) -> Iterator[RedisServer]:
    """A Redis of the test's own, to stop and start again on the same port."""
    server = start_redis(stack.log_dir, name="audit-redis")
    yield server
    server.process.stop()


def stop_keeping_data(server: RedisServer) -> None:
    """SHUTDOWN SAVE: the stream survives the restart (the servers run without persistence)."""
    with redis.Redis(port=server.port) as client, contextlib.suppress(redis.ConnectionError):
        client.shutdown(save=True)
    assert server.process.proc is not None
    server.process.proc.wait(timeout=10)
    server.process.stop()


def restart(server: RedisServer) -> None:
    server.process.start()
    server.process.wait_until(tcp_open(server.port))


def spooled(directory: Path) -> str:
    """Everything the spool files in `directory` hold."""
    return "".join(path.read_text() for path in directory.glob("*.spool"))


async def burst(
    stack: Stack,
    broker: BrokerServer,
    realm: str,
    ids: list[str],
    *,
    halfway: asyncio.Event | None = None,
) -> list[httpx.Response]:
    """Concurrent token requests with the given request ids; `halfway` is set once a
    third of them have been answered."""
    answered = 0
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(request_id: str) -> httpx.Response:
            response = await client.get(
                f"{broker.url}/v1/realms/{realm}/token",
                headers={**bearer(stack.keys.everything), "X-Request-ID": request_id},
            )
            stack.served_tokens(response)
            nonlocal answered
            answered += 1
            if halfway is not None and answered * 3 >= len(ids):
                halfway.set()
            return response

        return list(await asyncio.gather(*(one(rid) for rid in ids)))


async def test_events_during_a_redis_outage_reach_the_stream_exactly_once(
    stack: Stack, own_redis: RedisServer
) -> None:
    """Redis stopped in the middle of a burst and started again: every request's event is
    in the stream exactly once, in the order the broker emitted them (its stdout copy)."""
    prefix = f"spool-{uuid.uuid4().hex[:8]}"
    broker = stack.start_broker(BROKER_REDIS_URL=own_redis.url, BROKER_KEY_PREFIX=prefix)
    realm = stack.new_realm("outage")
    ids = [f"outage-{i:03d}" for i in range(300)]
    halfway = asyncio.Event()

    async def stop_mid_burst() -> None:
        await asyncio.wait_for(halfway.wait(), timeout=30)
        await asyncio.to_thread(stop_keeping_data, own_redis)

    responses, _ = await asyncio.gather(
        burst(stack, broker, realm.name, ids[:200], halfway=halfway), stop_mid_burst()
    )
    down = await burst(stack, broker, realm.name, ids[200:250])
    restart(own_redis)
    after = await burst(stack, broker, realm.name, ids[250:])
    assert [200] * 300 == [r.status_code for r in [*responses, *down, *after]]

    events = wait_for_stream(
        own_redis.url,
        prefix,
        lambda es: set(ids) <= {e.get("request_id") for e in es},
        timeout=30,
    )
    issued = [e["request_id"] for e in with_request_ids(events, "outage-")]
    emitted = [
        e["request_id"] for e in with_request_ids(stack.audit_events(broker.process), "outage-")
    ]
    spooled = "audit stream unavailable, spooling" in broker.process.log_path.read_text()
    assert (Counter(ids), emitted, True) == (Counter(issued), issued, spooled)


def test_spool_of_a_killed_broker_is_replayed_by_the_next(stack: Stack) -> None:
    """Events spooled by a broker that was killed during an outage reach the stream
    through the next broker with the same prefix and spool directory."""
    prefix = f"orphan-{uuid.uuid4().hex[:8]}"
    spool_dir = str(stack.log_dir / "shared-spool")
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    first = stack.start_broker(
        name="doomed",
        BROKER_REDIS_URL=dead_redis,
        BROKER_KEY_PREFIX=prefix,
        BROKER_AUDIT_SPOOL_DIR=spool_dir,
    )
    realm = stack.new_realm("orphan")
    ids = [f"orphan-{i}" for i in range(10)]
    for rid in ids:
        response = httpx.get(
            f"{first.url}/v1/realms/{realm.name}/token",
            headers={**bearer(stack.keys.everything), "X-Request-ID": rid},
            timeout=30,
        )
        stack.served_tokens(response)
    # Without BROKER_AUDIT_REQUIRED an event is queued in memory until the writer spools
    # it (milliseconds): kill only once all ten are on disk.
    on_disk = [f'"request_id":"{rid}"' for rid in ids]
    wait_for(
        lambda: all(rid in spooled(stack.log_dir / "shared-spool") for rid in on_disk),
        interval=0.02,
        message="events not spooled",
    )
    assert first.process.proc is not None
    first.process.proc.kill()
    first.process.stop()

    stack.start_broker(name="heir", BROKER_KEY_PREFIX=prefix, BROKER_AUDIT_SPOOL_DIR=spool_dir)
    events = wait_for_stream(
        stack.redis.url, prefix, lambda es: set(ids) <= {e.get("request_id") for e in es}
    )
    issued = [e["request_id"] for e in events if e["event"] == "token.issued"]
    assert Counter(ids) == Counter(issued)


def test_required_audit_serves_while_the_spool_is_writable(stack: Stack) -> None:
    """BROKER_AUDIT_REQUIRED with Redis unreachable: the spool is durable, tokens are served."""
    broker = stack.start_broker(
        BROKER_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", BROKER_AUDIT_REQUIRED="true"
    )
    response = httpx.get(
        f"{broker.url}/v1/realms/{stack.new_realm('durable').name}/token",
        headers=bearer(stack.keys.everything),
        timeout=30,
    )
    stack.served_tokens(response)
    assert 200 == response.status_code


def test_required_audit_refuses_without_a_durable_record(stack: Stack) -> None:
    """BROKER_AUDIT_REQUIRED with Redis unreachable and an unwritable spool: 503, and the
    token is not handed out."""
    blocker = stack.log_dir / "not-a-directory"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("")
    broker = stack.start_broker(
        BROKER_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        BROKER_AUDIT_REQUIRED="true",
        BROKER_AUDIT_SPOOL_DIR=str(blocker / "spool"),
    )
    response = httpx.get(
        f"{broker.url}/v1/realms/{stack.new_realm('undurable').name}/token",
        headers={**bearer(stack.keys.everything), "X-Request-ID": "undurable-1"},
        timeout=30,
    )
    stack.served_tokens(response)
    assert (503, "audit-unavailable", False) == (
        response.status_code,
        response.json()["type"].rsplit("/", 1)[-1],
        "access_token" in response.text,
    )


def test_refusal_for_want_of_a_record_is_logged_as_denied(stack: Stack) -> None:
    """The copy on stdout says what happened: token.denied, reason audit-unavailable, never
    token.issued."""
    blocker = stack.log_dir / "not-a-directory"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("")
    broker = stack.start_broker(
        BROKER_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        BROKER_AUDIT_REQUIRED="true",
        BROKER_AUDIT_SPOOL_DIR=str(blocker / "spool"),
    )
    realm = stack.new_realm("undurable")
    httpx.get(
        f"{broker.url}/v1/realms/{realm.name}/token",
        headers={**bearer(stack.keys.everything), "X-Request-ID": "undurable-2"},
        timeout=30,
    )
    records = read_until(
        lambda: [
            (e["event"], e.get("reason"))
            for e in stack.audit_events(broker.process)
            if e.get("request_id") == "undurable-2"
        ],
        bool,
    )
    assert [("token.denied", "audit-unavailable")] == records
