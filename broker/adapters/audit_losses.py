"""What the Redis audit writer could not do as asked, counted and said out loud.

An audit event that fits nowhere (the in-memory backlog at its bound, because Redis is
away and the spool is full) is dropped from the trail of record: never silently. It is
counted (`atlas_broker_audit_events_dropped_total`) and logged at error level, the first
drop at once and then one line per `log_interval` with the count since the last line (a
flood of drops must not become a flood of log lines). Its copy on stdout or in
BROKER_AUDIT_FILE is still written by the fan-out. A full spool and an append that
Redis answered with fewer events than sent (a writer mark pushed ahead by someone with
write access to Redis) are counted and exported the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

NAMESPACE = "atlas_broker"


@dataclass
class AuditLosses:
    log_interval: float = 10.0
    monotonic: Callable[[], float] = field(default=time.monotonic, repr=False)
    dropped: int = 0
    mismatches: int = 0
    spool_full: bool = False
    _unlogged: int = 0
    _logged_at: float | None = None

    def drop(self, count: int, *, reason: str) -> None:
        """`count` events fit nowhere and leave the trail of record."""
        self.dropped += count
        self._unlogged += count
        now = self.monotonic()
        if self._logged_at is None or now - self._logged_at >= self.log_interval:
            log.error(
                "audit events dropped from the trail of record (copies still on the audit log)",
                extra={"dropped": self._unlogged, "dropped_total": self.dropped, "cause": reason},
            )
            self._unlogged = 0
            self._logged_at = now

    def mismatch(self, *, sent: int, added: int) -> None:
        self.mismatches += 1
        log.error(
            "audit stream took fewer events than sent: its writer mark was moved ahead;"
            " the batch is spooled and written under a new writer id",
            extra={"sent": sent, "added": added},
        )

    def spool_filled(self, *, max_bytes: int, held: int) -> None:
        if not self.spool_full:
            log.error(
                "audit spool full: events held in memory until Redis returns, durable"
                " events refused when the trail is required",
                extra={"max_bytes": max_bytes, "held": held},
            )
        self.spool_full = True

    def spool_has_room(self) -> None:
        if self.spool_full:
            log.info("audit spool has room again")
        self.spool_full = False


class AuditLossCollector(Collector):
    """The writer's losses and its in-memory backlog, read at scrape time."""

    def __init__(self, losses: AuditLosses, backlog_events: Callable[[], int]) -> None:
        self._losses = losses
        self._backlog = backlog_events

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily(
            f"{NAMESPACE}_audit_events_dropped",
            "Audit events that fit nowhere (backlog bound reached, Redis away, spool full).",
            value=float(self._losses.dropped),
        )
        yield CounterMetricFamily(
            f"{NAMESPACE}_audit_append_mismatches",
            "Audit appends that Redis answered with fewer events than sent.",
            value=float(self._losses.mismatches),
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_audit_spool_full",
            "Whether the audit spool reached BROKER_AUDIT_SPOOL_MAX_BYTES (1) or not (0).",
            value=1.0 if self._losses.spool_full else 0.0,
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_audit_backlog_events",
            "Audit events held in memory, waiting for Redis or the spool.",
            value=float(self._backlog()),
        )
