"""Reading the audit trail back: the query `GET /v1/audit` asks and the page it gets.

Events are returned newest first in the order the trail received them. Events spooled
while Redis was down arrive late, so a page is not strictly ordered by `time`; the
`since` / `until` filters are nevertheless exact, applied to each event's own `time`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from broker.core.audit import iso_time

# A position in the trail: a Redis stream entry id (`<ms>-<seq>`); the in-memory trail
# uses the same shape so clients see one kind of cursor.
CURSOR_PATTERN = r"^[0-9]{1,19}-[0-9]{1,19}$"  # 19 digits: always within a stream id's 64 bits
_CURSOR_RE = re.compile(CURSOR_PATTERN)


def is_valid_cursor(cursor: str) -> bool:
    return _CURSOR_RE.fullmatch(cursor) is not None


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters (all optional, all must hold), a page size and where the last page ended.

    `since` is inclusive, `until` exclusive; both are seconds since the epoch.
    """

    realm: str | None = None
    caller: str | None = None
    event: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100
    cursor: str | None = None
    # The reader's scope: only events of these realms (None: every event). Events that
    # name no realm (a failed authentication) are outside every scope but the whole one.
    visible_realms: frozenset[str] | None = None

    def matches(self, record: dict[str, Any]) -> bool:
        """Whether one stored event (its JSON shape) passes every filter."""
        if self.realm is not None and record.get("realm") != self.realm:
            return False
        if self.visible_realms is not None and record.get("realm") not in self.visible_realms:
            return False
        if self.caller is not None and record.get("caller") != self.caller:
            return False
        if self.event is not None and record.get("event") != self.event:
            return False
        when = record.get("time")
        if not isinstance(when, str):
            return self.since is None and self.until is None
        # `time` is always iso_time(millis=True): fixed width, so strings order like times.
        if self.since is not None and when < iso_time(self.since, millis=True):
            return False
        return not (self.until is not None and when >= iso_time(self.until, millis=True))


@dataclass(frozen=True, slots=True)
class AuditPage:
    """Up to `limit` events, newest first, and the cursor of the next (older) page.

    A page may hold fewer than `limit` events, even none, while `next_cursor` is set: each
    request scans a bounded stretch of the trail. `next_cursor` is None at the end.
    """

    events: list[dict[str, Any]]
    next_cursor: str | None
