"""Audit events: one JSON shape for every sink (the Redis stream, the in-memory ring,
the JSON-lines copy), so a query or a log search reads the same fields everywhere."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import orjson

from broker.core.ids import new_id

if TYPE_CHECKING:
    from broker.core.context import RequestContext
    from broker.core.models import AccessToken
    from broker.core.ports import AuditSink, Clock


@functools.lru_cache(maxsize=1024)
def _iso_second(second: int) -> str:
    # Cached: a busy broker formats the same few seconds (now, a token's expiry) all day.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def iso_time(epoch: float, *, millis: bool = False) -> str:
    """RFC 3339 UTC, to the second or the millisecond."""
    second = int(epoch // 1)
    if millis:
        # Rounded to the microsecond first, as datetime does, so .123 stays .123.
        millis_part = min(999, round((epoch - second) * 1_000_000) // 1000)
        return f"{_iso_second(second)}.{millis_part:03d}Z"
    return _iso_second(second) + "Z"


# The prefix of the broker's API keys (`broker keygen`).
API_KEY_PREFIX = "atb_"


@dataclass(slots=True)
class AuditEvent:
    """One audit record. Holds a token's SHA-256 prefix, never the token.

    Not frozen, though never changed once built (sinks share it and `json_line` caches
    its encoding): a frozen dataclass sets each of its 26 fields through
    `object.__setattr__`, four times the cost of building it, once per issuance."""

    event: str
    time: float
    outcome: str
    realm: str | None = None
    scope: str | None = None
    caller: str | None = None
    source: str | None = None
    reason: str | None = None
    token_sha256: str | None = None
    token_expires_at: float | None = None
    credential_version: int | None = None
    # `credentials.rejected`: the new version the IdP refused (`credential_version` is
    # the one still in use).
    rejected_version: int | None = None
    request_id: str | None = None
    client_ip: str | None = None
    # An aggregate (`auth.failed`): how many, over which span, for which reasons.
    count: int | None = None
    first_time: float | None = None
    last_time: float | None = None
    reasons: dict[str, int] | None = None
    # A forwarded call (`api.forwarded`): what was sent to the API, without the query.
    method: str | None = None
    path: str | None = None
    status: int | None = None
    duration_ms: float | None = None
    id: str = field(default_factory=new_id)
    _line: str | None = field(default=None, init=False, repr=False, compare=False)

    def as_json(self) -> dict[str, Any]:
        """The wire shape: ISO times, no empty fields."""
        record = {
            name: value for name in _FIELD_NAMES if (value := getattr(self, name)) is not None
        }
        record["time"] = iso_time(self.time, millis=True)
        if self.realm is not None and self.realm.startswith(API_KEY_PREFIX):
            # A caller's key pasted where the realm name goes (`atb_…` is a valid realm
            # name): the trail and its copies never hold it.
            record["realm"] = "[redacted-api-key]"
        if self.token_expires_at is not None:
            record["token_expires_at"] = iso_time(self.token_expires_at)
        if self.first_time is not None:
            record["first_time"] = iso_time(self.first_time, millis=True)
        if self.last_time is not None:
            record["last_time"] = iso_time(self.last_time, millis=True)
        return record

    def json_line(self) -> str:
        """`as_json()` encoded as one compact JSON line, once: every sink writes the same."""
        line = self._line
        if line is None:
            line = orjson.dumps(self.as_json()).decode()
            self._line = line
        return line


_FIELD_NAMES = tuple(f.name for f in fields(AuditEvent) if not f.name.startswith("_"))


class AuditRecorder:
    """Builds events with the time, the token's fingerprint and the request's context,
    and hands them to the sink."""

    def __init__(self, sink: AuditSink, clock: Clock) -> None:
        self.sink = sink
        self._clock = clock

    async def record(
        self,
        event: str,
        *,
        realm: str,
        caller: str | None = None,
        source: str | None = None,
        token: AccessToken | None = None,
        credential_version: int | None = None,
        rejected_version: int | None = None,
        reason: str | None = None,
        outcome: str = "success",
        ctx: RequestContext | None = None,
    ) -> None:
        """`realm` may be a token slot (`rules.slot`): its scope set goes to `scope`."""
        name, _, scope = realm.partition(" ")
        await self.sink.emit(
            AuditEvent(
                event=event,
                time=self._clock.now(),
                outcome=outcome,
                realm=name,
                scope=scope or None,
                caller=caller,
                source=source,
                reason=reason,
                token_sha256=token.fingerprint() if token else None,
                token_expires_at=token.expires_at if token else None,
                credential_version=credential_version,
                rejected_version=rejected_version,
                request_id=ctx.request_id if ctx else None,
                client_ip=ctx.client_ip if ctx else None,
            )
        )
