"""The Redis audit writer's logic on a fake Redis that runs the append script's rules:
batches in order, a spool while Redis is away, replay in order and exactly once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from broker.adapters.audit_redis import RedisAuditSink
from broker.adapters.audit_spool import Spool
from broker.core.audit import AuditEvent
from broker.core.errors import AuditUnavailable
from fakes import EPOCH, FakeClock, eventually


class FakeRedis:
    """Runs the append script as the Lua does: per writer, only sequence numbers above
    its high-water mark are added. Can be down, or lose the reply of an applied call."""

    def __init__(self) -> None:
        self.stream: list[dict[str, Any]] = []
        self.marks: dict[str, int] = {}
        self.down = False
        self.lose_next_reply = False

    def register_script(self, source: str) -> Any:
        return self._append

    async def _append(self, *, keys: list[str], args: list[Any]) -> int:
        if self.down:
            raise RedisConnectionError("redis is down")
        mark = self.marks.get(keys[1], 0)
        pairs = args[3:]
        added = 0
        for seq, payload in zip(pairs[::2], pairs[1::2], strict=True):
            if int(seq) > mark:
                self.stream.append(json.loads(payload))
                mark = int(seq)
                added += 1
        self.marks[keys[1]] = mark
        if self.lose_next_reply:
            self.lose_next_reply = False
            raise RedisConnectionError("connection lost before the reply")
        return added

    def request_ids(self) -> list[str]:
        return [event["request_id"] for event in self.stream]


def event(n: int, name: str = "token.issued") -> AuditEvent:
    return AuditEvent(event=name, time=EPOCH, outcome="success", request_id=f"r{n}")


def sink(redis: FakeRedis, spool_dir: Path, *, required: bool = False) -> RedisAuditSink:
    return RedisAuditSink(
        redis,  # type: ignore[arg-type]
        prefix="test",
        spool_dir=spool_dir,
        retention_days=30,
        required=required,
        clock=FakeClock(),
        retry_interval=0.01,
    )


@pytest.fixture
def redis() -> FakeRedis:
    return FakeRedis()


@pytest.fixture
async def audit(redis: FakeRedis, tmp_path: Path) -> AsyncIterator[RedisAuditSink]:
    writer = sink(redis, tmp_path)
    await writer.start()
    yield writer
    await writer.aclose()


def spool_files(directory: Path) -> list[Path]:
    return list(directory.glob("*.spool"))


def spooled(tmp_path: Path) -> list[str]:
    lines = [line for path in tmp_path.glob("*.spool") for line in path.read_text().splitlines()]
    return [json.loads(line.split(" ", 1)[1])["request_id"] for line in lines]


async def test_events_reach_the_stream_in_order(redis: FakeRedis, audit: RedisAuditSink) -> None:
    """Emitted events land in the stream in the order they were emitted."""
    for n in range(5):
        await audit.emit(event(n))
    await eventually(lambda: len(redis.stream) == 5)
    assert ["r0", "r1", "r2", "r3", "r4"] == redis.request_ids()


async def test_events_go_to_the_spool_while_redis_is_down(
    redis: FakeRedis, audit: RedisAuditSink, tmp_path: Path
) -> None:
    """With Redis down, events are written to the spool file, in order."""
    redis.down = True
    for n in range(3):
        await audit.emit(event(n))
    await eventually(lambda: len(spooled(tmp_path)) == 3)
    assert ["r0", "r1", "r2"] == spooled(tmp_path)


async def test_spool_is_replayed_in_order_when_redis_returns(
    redis: FakeRedis, audit: RedisAuditSink
) -> None:
    """Events from before, during and after an outage reach the stream once, in order."""
    await audit.emit(event(0))
    await eventually(lambda: len(redis.stream) == 1)
    redis.down = True
    for n in range(1, 4):
        await audit.emit(event(n))
    redis.down = False
    await audit.emit(event(4))
    await eventually(lambda: len(redis.stream) == 5)
    assert ["r0", "r1", "r2", "r3", "r4"] == redis.request_ids()


async def test_a_batch_whose_reply_was_lost_is_not_added_twice(
    redis: FakeRedis, audit: RedisAuditSink
) -> None:
    """Redis applied a batch but the reply never came: the writer spools and replays it,
    and the high-water mark keeps the replay from adding it again."""
    redis.lose_next_reply = True
    await audit.emit(event(0))
    await eventually(lambda: not audit._backlog and redis.marks)
    await audit.emit(event(1))
    await eventually(lambda: len(redis.stream) >= 2)
    assert ["r0", "r1"] == redis.request_ids()


async def test_spool_of_a_dead_writer_is_replayed_first(redis: FakeRedis, tmp_path: Path) -> None:
    """A spool left by a previous process is replayed before the new process's events."""
    dead = Spool.create(tmp_path, prefix="test", writer="dead")
    dead.append([(1, json.dumps(event(0).as_json())), (2, json.dumps(event(1).as_json()))])
    dead.close()
    writer = sink(redis, tmp_path)
    await writer.start()
    await writer.emit(event(2))
    await eventually(lambda: len(redis.stream) == 3)
    await writer.aclose()
    assert (["r0", "r1", "r2"], []) == (redis.request_ids(), spool_files(tmp_path))


async def test_close_flushes_what_is_queued(redis: FakeRedis, tmp_path: Path) -> None:
    """Events emitted right before shutdown are in the stream once aclose returns."""
    writer = sink(redis, tmp_path)
    await writer.start()
    for n in range(50):
        await writer.emit(event(n))
    await writer.aclose()
    assert 50 == len(redis.stream)


async def test_close_while_redis_is_down_leaves_a_spool(redis: FakeRedis, tmp_path: Path) -> None:
    """Shutting down during an outage keeps the events in the spool for the next process."""
    redis.down = True
    writer = sink(redis, tmp_path)
    await writer.start()
    for n in range(3):
        await writer.emit(event(n))
    await writer.aclose()
    assert ["r0", "r1", "r2"] == spooled(tmp_path)


async def test_required_issuance_waits_for_a_durable_record(
    redis: FakeRedis, tmp_path: Path
) -> None:
    """With the trail required, emitting token.issued returns once the event is stored."""
    writer = sink(redis, tmp_path, required=True)
    await writer.start()
    await writer.emit(event(0))
    stored = len(redis.stream)
    await writer.aclose()
    assert 1 == stored


async def test_required_issuance_counts_the_spool_as_durable(
    redis: FakeRedis, tmp_path: Path
) -> None:
    """With Redis down but the spool writable, a required event is accepted."""
    redis.down = True
    writer = sink(redis, tmp_path, required=True)
    await writer.start()
    await writer.emit(event(0))
    await writer.aclose()
    assert ["r0"] == spooled(tmp_path)


async def test_required_issuance_fails_without_any_durable_store(
    redis: FakeRedis, tmp_path: Path
) -> None:
    """With Redis down and the spool unwritable, a required event raises AuditUnavailable."""
    redis.down = True
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    writer = sink(redis, blocker / "spool", required=True)
    await writer.start()
    with pytest.raises(AuditUnavailable):
        await writer.emit(event(0))
    writer._close_timeout = 0.1
    await writer.aclose()
