"""`RedisAuditSink`: the audit trail as a Redis Stream, `{prefix}:audit`, never dropped.

Hot path: `emit()` only appends to an in-memory queue; one background writer drains it
in batches, one script call (one round trip) per batch, so a request never waits on
Redis for its audit record. With `BROKER_AUDIT_REQUIRED`, a `token.issued` event is
awaited until it is durable (in the stream or the fsync'd spool); concurrent requests
share one batch, so that costs one round trip per batch, not per request.

Redis unreachable: batches go to the writer's spool file (`audit_spool`), and every
later batch too until the spool is replayed, so the stream receives events in order.
The writer retries Redis every `retry_interval` seconds and replays the spool when it
answers; spools of processes that died are adopted at start-up and replayed first.

Exactly once. Each event carries its writer's sequence number; the append script keeps
per writer a high-water mark (`{<stream key>}:writer:<writer>`, hash-tagged to the
stream's slot for Redis Cluster) and adds only events above it, atomically with the
mark. So a batch whose reply was lost (Redis applied it, the writer spooled it anyway),
a replay interrupted half-way, or a spool replayed again after a crash, are all skipped
where already present. Retention: each batch trims entries older than
`retention_days` (`XTRIM MINID`) and keeps at most about `max_events`
(`XTRIM MAXLEN ~`, trimming whole stream nodes only, so cheap); the mark lives as long as
the retention.

Bounds. The in-memory queue holds at most `backlog_max` events and the spool at most
`spool_max_bytes`: an event that fits nowhere is dropped, counted and logged
(`audit_losses`), and with BROKER_AUDIT_REQUIRED a durable event is refused instead
(the request gets 503). The append script reports how many events it added; a live batch
that Redis took only in part (someone moved the writer's mark ahead) is logged, counted
and spooled, and the writer continues under a new writer id, so nobody with write access
to Redis can silence the trail by setting one key (the part Redis did take is then in the
stream twice: a duplicate rather than a gap).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from broker.adapters.audit_losses import AuditLosses
from broker.adapters.audit_redis_query import read_page
from broker.adapters.audit_spool import Record, Spool, SpoolFull
from broker.adapters.redis_connect import REDIS_FAILURES, RedisClient
from broker.core.audit import AuditEvent
from broker.core.audit_query import AuditPage, AuditQuery
from broker.core.errors import AuditUnavailable
from broker.core.ports import Clock

log = logging.getLogger(__name__)

# KEYS[1] the stream, KEYS[2] the writer's high-water mark. ARGV[1] the oldest stream id
# to keep, ARGV[2] the mark's TTL in seconds, ARGV[3] the stream's length cap, then
# (sequence number, event JSON) pairs. Returns the number of events added.
_APPEND = """
local mark = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local added = 0
for i = 4, #ARGV, 2 do
  local seq = tonumber(ARGV[i])
  if seq > mark then
    redis.call('XADD', KEYS[1], '*', 'e', ARGV[i + 1])
    mark = seq
    added = added + 1
  end
end
redis.call('SET', KEYS[2], string.format('%.0f', mark), 'EX', ARGV[2])
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[3])
return added
"""

# Events that must be durable before the request goes on, when the trail is required.
_DURABLE = frozenset({"token.issued"})
_REPLAY_CHUNKS_PER_ROUND = 20


@dataclass(slots=True)
class _Pending:
    payload: str
    done: asyncio.Future[None] | None = None
    seq: int = 0


class RedisAuditSink:
    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str,
        spool_dir: Path,
        retention_days: int,
        required: bool,
        clock: Clock,
        batch_size: int = 256,
        retry_interval: float = 1.0,
        close_timeout: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
        max_events: int = 10_000_000,
        spool_max_bytes: int | None = None,
        backlog_max: int = 100_000,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self.stream = f"{prefix}:audit"
        self._append = client.register_script(_APPEND)
        self._spool_dir = spool_dir
        self._retention_s = retention_days * 86_400
        self._required = required
        self._clock = clock
        self._batch_size = batch_size
        self._retry_interval = retry_interval
        self._close_timeout = close_timeout
        self._monotonic = monotonic
        self._max_events = max_events
        self._spool_max_bytes = spool_max_bytes
        self._backlog_max = backlog_max
        self.losses = AuditLosses(monotonic=monotonic)
        self.writer = uuid.uuid4().hex
        self._seq = 0
        self._queue: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        self._spool: Spool | None = None
        self._orphans: list[Spool] = []
        self._backlog = False  # events wait in spools: new ones must queue behind them
        self._retry_at = 0.0
        self._down = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._in_hand: list[_Pending] = []  # the batch being written, should it be cut off

    def spool_backlog(self) -> int:
        """Bytes of spooled events not yet replayed into the stream (a metric)."""
        spools = [*self._orphans, *([self._spool] if self._spool else [])]
        return sum(max(0, spool.size() - spool.replayed) for spool in spools)

    def backlog_events(self) -> int:
        """Events held in memory (a metric)."""
        return len(self._queue)

    def mark_key(self, writer: str) -> str:
        return f"{{{self.stream}}}:writer:{writer}"

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        try:
            self._orphans = await asyncio.to_thread(
                Spool.adopt_orphans, self._spool_dir, prefix=self._prefix, own=self.writer
            )
        except OSError as exc:
            log.error("audit spools could not be read", extra={"error": type(exc).__name__})
        if self._orphans:
            self._backlog = True
            log.warning(
                "replaying audit spools of a previous run", extra={"spools": len(self._orphans)}
            )
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def aclose(self) -> None:
        """Flush: everything queued goes to the stream, or else to the spool."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self._close_timeout)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
                self._queue.extendleft(reversed(self._in_hand))
        if self._queue:
            batch = list(self._queue)
            self._queue.clear()
            self._number(batch)
            try:
                await asyncio.to_thread(self._spool_append, [(p.seq, p.payload) for p in batch])
            except OSError as exc:
                self.losses.drop(len(batch), reason=f"shutdown:{type(exc).__name__}")
        for spool in self._orphans:
            spool.close()
        if self._spool is not None:
            if self._spool.pending():
                self._spool.close()  # the next process adopts it
            else:
                self._spool.remove()

    # -- the port ---------------------------------------------------------------------

    async def emit(self, event: AuditEvent) -> None:
        pending = _Pending(event.json_line())
        wait = self._required and event.event in _DURABLE
        if wait:
            if self._task is None or self._task.done():
                raise AuditUnavailable("the audit writer is not running")
            if self.losses.spool_full and (self._down or self._backlog):
                raise AuditUnavailable("the audit stream is unreachable and the spool is full")
        if len(self._queue) >= self._backlog_max:
            if wait:
                raise AuditUnavailable("the audit backlog is full")
            self.losses.drop(1, reason="backlog-full")
            return
        if wait:
            pending.done = asyncio.get_running_loop().create_future()
        self._queue.append(pending)
        self._wake.set()
        if pending.done is not None:
            # shield: a caller that goes away must not cancel the record of its request.
            await asyncio.shield(pending.done)

    async def query(self, query: AuditQuery) -> AuditPage:
        return await read_page(self._redis, self.stream, query)

    # -- the writer -------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                if not await self._step():
                    return
            except Exception:
                # A bug here must not silence the trail: requeue what was in hand, go on.
                log.exception("audit writer failed, retrying")
                self._queue.extendleft(reversed(self._in_hand))
                self._in_hand = []
                await asyncio.sleep(self._retry_interval)

    async def _step(self) -> bool:
        """One round: replay a little if due, write one batch or wait. False when closed."""
        if self._backlog and (self._closing or self._monotonic() >= self._retry_at):
            await self._replay_some()
        if self._queue:
            self._in_hand = self._take()
            await self._write(self._in_hand)
            self._in_hand = []
            return True
        if self._closing and not (self._backlog and not self._down):
            return False
        self._wake.clear()
        timeout = max(0.01, self._retry_at - self._monotonic()) if self._backlog else None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        return True

    def _take(self) -> list[_Pending]:
        batch = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
        self._number(batch)
        return batch

    def _number(self, batch: list[_Pending]) -> None:
        for pending in batch:
            if pending.seq == 0:
                self._seq += 1
                pending.seq = self._seq

    async def _write(self, batch: list[_Pending]) -> None:
        records = [(p.seq, p.payload) for p in batch]
        if not self._backlog:
            try:
                added = await self._add(self.writer, records)
            except REDIS_FAILURES as exc:
                self._went_down(exc)
            else:
                if added == len(records):
                    self._settle(batch)
                    return
                await self._renew_writer(sent=len(records), added=added)
        try:
            await asyncio.to_thread(self._spool_append, records)
        except OSError as exc:
            if isinstance(exc, SpoolFull):
                self.losses.spool_filled(
                    max_bytes=self._spool_max_bytes or 0, held=len(self._queue) + len(batch)
                )
            else:
                log.error(
                    "audit spool unwritable, events held in memory",
                    extra={"events": len(batch), "error": type(exc).__name__},
                )
            held = [p for p in batch if p.done is None]
            for p in batch:
                if p.done is not None and not p.done.done():
                    p.done.set_exception(AuditUnavailable("no durable audit record possible"))
            if self._closing:
                # Nowhere left to put them; their copies went to stdout / the audit file.
                self.losses.drop(len(held), reason="shutdown")
                return
            self._queue.extendleft(reversed(held))
            await asyncio.sleep(self._retry_interval)
            return
        self._backlog = True
        self._settle(batch)

    def _spool_append(self, records: list[Record]) -> None:
        if self._spool is None:
            self._spool = Spool.create(self._spool_dir, prefix=self._prefix, writer=self.writer)
        self._spool.append(records, max_bytes=self._spool_max_bytes)
        self.losses.spool_has_room()

    async def _renew_writer(self, *, sent: int, added: int) -> None:
        """Redis took only part of a live batch: the writer's mark was moved ahead. Count
        it, and go on as a new writer (a fresh mark) so the spooled batch, replayed under
        the new id, and every later event reach the stream."""
        self.losses.mismatch(sent=sent, added=added)
        self.writer = uuid.uuid4().hex
        if self._spool is not None:
            # Empty (nothing is spooled while writing live); the next one bears the new id.
            await asyncio.to_thread(self._spool.remove)
            self._spool = None

    def _settle(self, batch: list[_Pending]) -> None:
        for pending in batch:
            if pending.done is not None and not pending.done.done():
                pending.done.set_result(None)

    async def _add(self, writer: str, records: list[Record]) -> int:
        """Append; returns how many of `records` the stream took."""
        oldest_ms = max(0, int((self._clock.now() - self._retention_s) * 1000))
        args: list[str | int] = [oldest_ms, self._retention_s, self._max_events]
        for seq, payload in records:
            args += [seq, payload]
        added = await self._append(keys=[self.stream, self.mark_key(writer)], args=args)
        if self._down:
            self._down = False
            log.info("audit stream reachable again")
        return int(added)

    def _went_down(self, exc: Exception) -> None:
        self._retry_at = self._monotonic() + self._retry_interval
        if not self._down:
            self._down = True
            log.warning("audit stream unavailable, spooling", extra={"error": type(exc).__name__})

    async def _replay_some(self) -> None:
        """Move a bounded number of batches from the spools to the stream, oldest spool
        first, so queued events are not held up behind a long replay."""
        budget = _REPLAY_CHUNKS_PER_ROUND
        try:
            while self._orphans and budget > 0:
                orphan = self._orphans[0]
                budget = await self._drain(orphan, budget)
                if not orphan.pending():
                    # Out of the list before its file goes, so no reader sees it half-removed.
                    self._orphans.pop(0)
                    await asyncio.to_thread(orphan.remove)
            if not self._orphans and self._spool is not None and budget > 0:
                budget = await self._drain(self._spool, budget)
        except REDIS_FAILURES as exc:
            self._went_down(exc)
            return
        if not self._orphans and (self._spool is None or not self._spool.pending()):
            if self._spool is not None:
                await asyncio.to_thread(self._spool.reset)
            self.losses.spool_has_room()
            self._backlog = False
            log.info("audit spool replayed into the stream")

    async def _drain(self, spool: Spool, budget: int) -> int:
        while budget > 0 and spool.pending():
            records, end = await asyncio.to_thread(spool.read, self._batch_size)
            if records:
                added = await self._add(spool.writer, records)
                if added < len(records):
                    # Already there (a reply lost before the spooling) or a mark moved ahead.
                    log.warning(
                        "audit replay: some spooled events were not added",
                        extra={"spool": spool.path.name, "sent": len(records), "added": added},
                    )
            if end == spool.replayed:
                # Never written by us (lines are whole and short): skip rather than spin.
                log.error(
                    "unreadable rest of an audit spool skipped", extra={"spool": spool.path.name}
                )
                spool.replayed = spool.size()
                break
            spool.replayed = end
            budget -= 1
        return budget
