"""`MemoryAuditTrail`: the recent audit events of this process, for `memory://`.

With the embedded store there is no shared stream; `GET /v1/audit` then reads a ring of
the last `capacity` events this process emitted. Positions use the stream-id shape
(`<n>-0`), so cursors look the same as with Redis.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import orjson

from broker.core.audit import AuditEvent
from broker.core.audit_query import AuditPage, AuditQuery


class MemoryAuditTrail:
    def __init__(self, *, capacity: int = 10_000) -> None:
        self._events: deque[tuple[int, dict[str, Any]]] = deque(maxlen=capacity)
        self._next = 1

    async def emit(self, event: AuditEvent) -> None:
        # A JSON round trip, so what is read back is exactly what a stream would hold.
        self._events.append((self._next, orjson.loads(event.json_line())))
        self._next += 1

    async def query(self, query: AuditQuery) -> AuditPage:
        before = int(query.cursor.split("-", 1)[0]) if query.cursor else None
        events: list[dict[str, Any]] = []
        last: int | None = None
        for position, record in reversed(self._events):
            if before is not None and position >= before:
                continue
            last = position
            if query.matches(record):
                events.append(record)
                if len(events) == query.limit:
                    break
        more = len(events) == query.limit and last is not None and last > self._oldest()
        return AuditPage(events, f"{last}-0" if more else None)

    def _oldest(self) -> int:
        return self._events[0][0] if self._events else 0

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
