"""`RefusalTally`: refusals that anyone can repeat at will, audited in aggregate.

A refused request costs the sender one request and must cost the broker no more: writing
an audit record per refusal let any client fill the audit stream and the spool at the
rate it could send. So such refusals are counted in memory, per key and per minute
(aligned to the clock's minute), and each minute's counts become one event per key, with
the count, the first and last time and the reasons (reason -> count), written when the
minute ends and at shutdown. Two tallies use it:

- failed authentications, keyed by source address: `auth.failed` (`client_ip`);
- a known caller's requests past its rate limit, keyed by caller: the first of each
  minute is recorded on its own by the gatekeeper (with its request id), the rest are
  `rate_limit.exceeded` (`caller`).

Memory is bounded: at most `max_keys` keys are told apart in one minute; the rest are
counted under `_other`.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Literal

from broker.core.audit import AuditEvent
from broker.core.ports import AuditSink, Clock

OTHER_KEYS = "_other"


@dataclass(slots=True)
class _Count:
    first: float
    last: float
    count: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


class RefusalTally:
    def __init__(
        self,
        *,
        audit: AuditSink,
        clock: Clock,
        event: str = "auth.failed",
        keyed_by: Literal["client_ip", "caller"] = "client_ip",
        first_alone: bool = False,
        window: float = 60.0,
        max_keys: int = 10_000,
    ) -> None:
        self._audit = audit
        self._clock = clock
        self._event = event
        self._keyed_by = keyed_by
        self._first_alone = first_alone
        self._window = window
        self._max_keys = max_keys
        self._started: float | None = None  # start of the window being counted
        self._counts: dict[str, _Count] = {}
        self._closed: list[dict[str, _Count]] = []

    def record(self, key: str | None, reason: str) -> bool:
        """Count one refusal for `key` (no I/O: this is on the refusal's path). With
        `first_alone`, the key's first refusal of the minute is not counted and True is
        returned: the caller records that one on its own."""
        now = self._clock.now()
        start = math.floor(now / self._window) * self._window
        if self._started != start:
            self._close_window()
            self._started = start
        key = key or "unknown"
        entry = self._counts.get(key)
        if entry is None:
            if len(self._counts) >= self._max_keys:
                key = OTHER_KEYS
                entry = self._counts.get(key)
            if entry is None:
                entry = self._counts[key] = _Count(first=now, last=now)
                if self._first_alone:
                    return True
        if entry.count == 0:
            entry.first = now
        entry.count += 1
        entry.last = now
        entry.reasons[reason] = entry.reasons.get(reason, 0) + 1
        return False

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
            for key, entry in counts.items():
                if entry.count == 0:
                    continue  # only a first refusal, recorded on its own
                await self._audit.emit(
                    AuditEvent(
                        event=self._event,
                        time=entry.last,
                        outcome="denied",
                        client_ip=key if self._keyed_by == "client_ip" else None,
                        caller=key if self._keyed_by == "caller" else None,
                        count=entry.count,
                        first_time=entry.first,
                        last_time=entry.last,
                        reasons=dict(sorted(entry.reasons.items())),
                    )
                )
