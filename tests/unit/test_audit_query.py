"""Reading the audit trail back: filters as data, and the in-memory trail's pages."""

from __future__ import annotations

from broker.adapters.audit_memory import MemoryAuditTrail
from broker.core.audit import AuditEvent
from broker.core.audit_query import AuditQuery, is_valid_cursor
from fakes import EPOCH


def event(n: int, **fields: str) -> AuditEvent:
    values = {"event": "token.issued", "caller": "billing-api", "realm": "acme", **fields}
    return AuditEvent(time=EPOCH + n, outcome="success", request_id=f"r{n}", **values)


def record(n: int, **fields: str) -> dict[str, object]:
    return event(n, **fields).as_json()


def test_filters_all_have_to_hold() -> None:
    """An event passes only when realm, caller and event all match."""
    query = AuditQuery(realm="acme", caller="billing-api", event="token.issued")
    assert (True, False, False) == (
        query.matches(record(1)),
        query.matches(record(1, realm="globex")),
        query.matches(record(1, event="token.denied")),
    )


def test_since_is_inclusive_and_until_exclusive() -> None:
    """since <= time < until."""
    query = AuditQuery(since=EPOCH + 1, until=EPOCH + 2)
    assert (False, True, False) == tuple(query.matches(record(n)) for n in (0, 1, 2))


def test_cursor_shape_is_a_stream_id() -> None:
    """Cursors are `<ms>-<seq>`; anything else is refused."""
    assert (True, False, False) == (
        is_valid_cursor("1764270000123-0"),
        is_valid_cursor("abc"),
        is_valid_cursor("1-2-3"),
    )


async def test_memory_trail_is_newest_first() -> None:
    """The in-memory trail answers newest first."""
    trail = MemoryAuditTrail()
    for n in range(3):
        await trail.emit(event(n))
    page = await trail.query(AuditQuery())
    assert ["r2", "r1", "r0"] == [e["request_id"] for e in page.events]


async def test_memory_trail_pages_cover_everything_once() -> None:
    """Following next_cursor visits every matching event exactly once, then ends."""
    trail = MemoryAuditTrail()
    for n in range(7):
        await trail.emit(event(n, realm="acme" if n % 2 else "globex"))
    seen, cursor = [], None
    while True:
        page = await trail.query(AuditQuery(realm="acme", limit=2, cursor=cursor))
        seen += [e["request_id"] for e in page.events]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert ["r5", "r3", "r1"] == seen


async def test_memory_trail_keeps_the_most_recent_events() -> None:
    """Beyond its capacity the ring forgets the oldest events."""
    trail = MemoryAuditTrail(capacity=2)
    for n in range(3):
        await trail.emit(event(n))
    assert ["r2", "r1"] == [e["request_id"] for e in (await trail.query(AuditQuery())).events]
