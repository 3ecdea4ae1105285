"""The Redis audit writer on a real Redis, running its real append script: batches in
order, a spool while Redis is away, replay in order and exactly once. Outages and lost
replies are made on the wire by a proxy between the writer and Redis."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from atlas_broker_dev.servers import RedisServer
from broker.adapters.audit_redis import RedisAuditSink
from broker.adapters.audit_spool import Spool
from broker.adapters.clock import SystemClock
from broker.adapters.redis_connect import RedisClient
from broker.adapters.redis_store import create_redis
from broker.core.audit import AuditEvent
from broker.core.errors import AuditUnavailable
from polling import eventually
from redis_proxy import RedisProxy

MakeSink = Callable[..., RedisAuditSink]


def event(n: int, name: str = "token.issued") -> AuditEvent:
    return AuditEvent(event=name, time=time.time(), outcome="success", request_id=f"r{n}")


class Trail:
    """The writer's stream, read directly from Redis (not through the proxy)."""

    def __init__(self, direct: aioredis.Redis, stream: str) -> None:
        self._direct = direct
        self.stream = stream
        self.request_ids: list[str] = []

    async def read(self) -> list[str]:
        entries: Any = await self._direct.xrange(self.stream)
        self.request_ids = [json.loads(fields[b"e"])["request_id"] for _, fields in entries]
        return self.request_ids

    async def has(self, count: int) -> bool:
        return len(await self.read()) >= count


@pytest.fixture
async def proxy(redis_server: RedisServer) -> AsyncIterator[RedisProxy]:
    started = await RedisProxy(redis_server.port).start()
    yield started
    await started.aclose()


@pytest.fixture
def prefix() -> str:
    return f"audit-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def trail(redis_server: RedisServer, prefix: str) -> AsyncIterator[Trail]:
    direct = aioredis.from_url(redis_server.url)
    yield Trail(direct, f"{prefix}:audit")
    await direct.aclose()


@pytest.fixture
async def clients(proxy: RedisProxy) -> AsyncIterator[list[RedisClient]]:
    made: list[RedisClient] = []
    yield made
    for client in made:
        await client.aclose()


@pytest.fixture
def sink(proxy: RedisProxy, prefix: str, clients: list[RedisClient]) -> MakeSink:
    """Makes writers as the app does (`create_redis`), talking to Redis through the proxy."""

    def make(spool_dir: Path, *, required: bool = False) -> RedisAuditSink:
        client = create_redis(proxy.url)
        clients.append(client)
        return RedisAuditSink(
            client,
            prefix=prefix,
            spool_dir=spool_dir,
            retention_days=30,
            required=required,
            clock=SystemClock(),
            retry_interval=0.01,
        )

    return make


@pytest.fixture
async def audit(sink: MakeSink, tmp_path: Path) -> AsyncIterator[RedisAuditSink]:
    writer = sink(tmp_path)
    await writer.start()
    yield writer
    await writer.aclose()


def spool_files(directory: Path) -> list[Path]:
    return list(directory.glob("*.spool"))


def spooled(directory: Path) -> list[str]:
    lines = [line for path in spool_files(directory) for line in path.read_text().splitlines()]
    return [json.loads(line.split(" ", 1)[1])["request_id"] for line in lines]


async def test_events_reach_the_stream_in_order(audit: RedisAuditSink, trail: Trail) -> None:
    """Emitted events land in the stream in the order they were emitted."""
    for n in range(5):
        await audit.emit(event(n))
    await eventually(lambda: trail.has(5), message="events did not reach the stream")
    assert ["r0", "r1", "r2", "r3", "r4"] == trail.request_ids


async def test_events_go_to_the_spool_while_redis_is_down(
    proxy: RedisProxy, audit: RedisAuditSink, tmp_path: Path
) -> None:
    """With Redis unreachable, events are written to the spool file, in order."""
    proxy.go_down()
    for n in range(3):
        await audit.emit(event(n))
    await eventually(lambda: len(spooled(tmp_path)) == 3, message="events not spooled")
    assert ["r0", "r1", "r2"] == spooled(tmp_path)


async def test_spool_is_replayed_in_order_when_redis_returns(
    proxy: RedisProxy, audit: RedisAuditSink, trail: Trail, tmp_path: Path
) -> None:
    """Events from before, during and after an outage reach the stream once, in order."""
    await audit.emit(event(0))
    await eventually(lambda: trail.has(1), message="first event not in the stream")
    proxy.go_down()
    for n in range(1, 4):
        await audit.emit(event(n))
    await eventually(lambda: len(spooled(tmp_path)) == 3, message="outage events not spooled")
    proxy.come_back()
    await audit.emit(event(4))
    await eventually(lambda: trail.has(5), message="spool not replayed")
    assert ["r0", "r1", "r2", "r3", "r4"] == trail.request_ids


async def test_a_batch_whose_reply_was_lost_is_not_added_twice(
    proxy: RedisProxy, audit: RedisAuditSink, trail: Trail, tmp_path: Path
) -> None:
    """Redis applied a batch but the reply never came: the writer spools and replays it,
    and the script's high-water mark keeps the replay from adding it again."""
    await audit.emit(event(0))
    await eventually(lambda: trail.has(1), message="first event not in the stream")
    proxy.lose_next_reply()
    await audit.emit(event(1))
    await eventually(lambda: spooled(tmp_path) == ["r1"], message="lost batch not spooled")
    proxy.come_back()
    await audit.emit(event(2))
    await eventually(lambda: trail.has(3), message="spool not replayed")
    assert (1, ["r0", "r1", "r2"]) == (proxy.replies_lost, await trail.read())


async def test_spool_of_a_dead_writer_is_replayed_first(
    sink: MakeSink, trail: Trail, prefix: str, tmp_path: Path
) -> None:
    """A spool left by a previous process is replayed before the new process's events."""
    dead = Spool.create(tmp_path, prefix=prefix, writer="dead")
    dead.append([(1, json.dumps(event(0).as_json())), (2, json.dumps(event(1).as_json()))])
    dead.close()
    writer = sink(tmp_path)
    await writer.start()
    await writer.emit(event(2))
    await eventually(lambda: trail.has(3), message="dead writer's spool not replayed")
    await writer.aclose()
    assert (["r0", "r1", "r2"], []) == (trail.request_ids, spool_files(tmp_path))


async def test_close_flushes_what_is_queued(sink: MakeSink, trail: Trail, tmp_path: Path) -> None:
    """Events emitted right before shutdown are in the stream once aclose returns."""
    writer = sink(tmp_path)
    await writer.start()
    for n in range(50):
        await writer.emit(event(n))
    await writer.aclose()
    assert 50 == len(await trail.read())


async def test_close_while_redis_is_down_leaves_a_spool(
    sink: MakeSink, proxy: RedisProxy, tmp_path: Path
) -> None:
    """Shutting down during an outage keeps the events in the spool for the next process."""
    proxy.go_down()
    writer = sink(tmp_path)
    await writer.start()
    for n in range(3):
        await writer.emit(event(n))
    await writer.aclose()
    assert ["r0", "r1", "r2"] == spooled(tmp_path)


async def test_required_issuance_waits_for_a_durable_record(
    sink: MakeSink, trail: Trail, tmp_path: Path
) -> None:
    """With the trail required, emitting token.issued returns once the event is stored."""
    writer = sink(tmp_path, required=True)
    await writer.start()
    await writer.emit(event(0))
    stored = await trail.read()
    await writer.aclose()
    assert ["r0"] == stored


async def test_required_issuance_counts_the_spool_as_durable(
    sink: MakeSink, proxy: RedisProxy, tmp_path: Path
) -> None:
    """With Redis unreachable but the spool writable, a required event is accepted."""
    proxy.go_down()
    writer = sink(tmp_path, required=True)
    await writer.start()
    await writer.emit(event(0))
    await writer.aclose()
    assert ["r0"] == spooled(tmp_path)


async def test_required_issuance_fails_without_any_durable_store(
    sink: MakeSink, proxy: RedisProxy, tmp_path: Path
) -> None:
    """With Redis unreachable and the spool unwritable, a required event raises
    AuditUnavailable."""
    proxy.go_down()
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    writer = sink(blocker / "spool", required=True)
    await writer.start()
    with pytest.raises(AuditUnavailable):
        await writer.emit(event(0))
    writer._close_timeout = 0.1
    await writer.aclose()
