"""Reading the audit stream back (`GET /v1/audit`): newest first, filtered, paged by
stream id, each call scanning a bounded number of entries."""

from __future__ import annotations

import json
from typing import Any

from broker.adapters.redis_connect import REDIS_FAILURES, RedisClient
from broker.core.audit_query import AuditPage, AuditQuery
from broker.core.errors import StoreUnavailable

# Stream ids are Redis's clock, event times the broker's: allow this much skew.
_CLOCK_SLACK_MS = 300_000
_SCAN_BUDGET = 5_000


async def read_page(redis: RedisClient, stream: str, query: AuditQuery) -> AuditPage:
    """One page of `query` from `stream`. Raises StoreUnavailable when Redis fails."""
    if query.cursor is not None and query.cursor.strip("0-") == "":
        return AuditPage([], None)  # nothing is older than the stream's first id
    upper = f"({query.cursor}" if query.cursor else "+"
    lower = "-"
    if query.since is not None:
        lower = str(max(0, int(query.since * 1000) - _CLOCK_SLACK_MS))
    chunk = min(1000, max(100, query.limit * 2))
    events: list[dict[str, Any]] = []
    scanned = 0
    last: str | None = None
    try:
        while scanned < _SCAN_BUDGET:
            entries = await redis.xrevrange(stream, max=upper, min=lower, count=chunk)
            for raw_id, fields in entries or []:
                scanned += 1
                last = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
                record = _decode(fields)
                if record is not None and query.matches(record):
                    events.append(record)
                    if len(events) == query.limit:
                        return AuditPage(events, last)
            if not entries or len(entries) < chunk:
                return AuditPage(events, None)
            upper = f"({last}"
    except REDIS_FAILURES as exc:
        raise StoreUnavailable(f"redis: {type(exc).__name__}") from exc
    return AuditPage(events, last)


def _decode(fields: Any) -> dict[str, Any] | None:
    raw = fields.get(b"e") if isinstance(fields, dict) else None
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
