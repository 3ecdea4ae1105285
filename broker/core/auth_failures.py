"""`AuthFailureTally`: authentication failures audited in aggregate.

A refused credential costs the attacker one request and must cost the broker no more:
writing an audit record per refusal let any unauthenticated client fill the audit
stream and the spool at the rate it could send. So failures are counted in memory, per
source address and per minute (aligned to the clock's minute), and each minute's counts
become one `auth.failed` event per source address, with the count, the first and last
time and the reasons (reason -> count), when the minute ends and at shutdown.

Memory is bounded: at most `max_sources` addresses are told apart in one minute; the
rest are counted under the source `_other`.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

from broker.core.audit import AuditEvent
from broker.core.ports import AuditSink, Clock

OTHER_SOURCES = "_other"


@dataclass(slots=True)
class _Count:
    first: float
    last: float
    count: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


class AuthFailureTally:
    def __init__(
        self,
        *,
        audit: AuditSink,
        clock: Clock,
        window: float = 60.0,
        max_sources: int = 10_000,
    ) -> None:
        self._audit = audit
        self._clock = clock
        self._window = window
        self._max_sources = max_sources
        self._started: float | None = None  # start of the window being counted
        self._counts: dict[str, _Count] = {}
        self._closed: list[dict[str, _Count]] = []

    def record(self, source: str | None, reason: str) -> None:
        """Count one failure from `source` (no I/O: this is on the refusal's path)."""
        now = self._clock.now()
        start = math.floor(now / self._window) * self._window
        if self._started != start:
            self._close_window()
            self._started = start
        key = source or "unknown"
        entry = self._counts.get(key)
        if entry is None:
            if len(self._counts) >= self._max_sources:
                key = OTHER_SOURCES
                entry = self._counts.get(key)
            if entry is None:
                entry = self._counts[key] = _Count(first=now, last=now)
        entry.count += 1
        entry.last = now
        entry.reasons[reason] = entry.reasons.get(reason, 0) + 1

    async def flush_due(self) -> None:
        """Emit the windows that have ended."""
        if self._started is not None and self._clock.now() >= self._started + self._window:
            self._close_window()
            self._started = None
        await self._emit_closed()

    async def flush_all(self) -> None:
        """Emit everything counted, the current window included (at shutdown)."""
        self._close_window()
        self._started = None
        await self._emit_closed()

    async def run(self) -> None:
        """Flush each window shortly after it ends, until cancelled."""
        while True:
            now = self._clock.now()
            next_end = (math.floor(now / self._window) + 1) * self._window
            await asyncio.sleep(max(0.0, next_end - now) + 0.05)
            await self.flush_due()

    def _close_window(self) -> None:
        if self._counts:
            self._closed.append(self._counts)
            self._counts = {}

    async def _emit_closed(self) -> None:
        closed, self._closed = self._closed, []
        for counts in closed:
            for source, entry in counts.items():
                await self._audit.emit(
                    AuditEvent(
                        event="auth.failed",
                        time=entry.last,
                        outcome="denied",
                        client_ip=source,
                        count=entry.count,
                        first_time=entry.first,
                        last_time=entry.last,
                        reasons=dict(sorted(entry.reasons.items())),
                    )
                )
