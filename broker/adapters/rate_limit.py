"""Per-caller rate limits: GCRA, shared by every replica through Redis.

GCRA (the generic cell rate algorithm, a token bucket kept as one number) stores per
caller only its "theoretical arrival time" `tat`: a request at `now` is allowed when
`max(tat, now) + interval - burst * interval <= now`, and then moves `tat` on by one
`interval = 1 / per_second`. One key per caller, `{prefix}:ratelimit:{caller}`, updated
by one Lua script (atomic, one round trip, Redis's own clock so replicas with skewed
clocks agree), expiring once the bucket is full again.

When Redis fails, each replica limits on its own with the same algorithm in process
memory (a caller then gets up to its limit per replica), and Redis is left alone for a
few seconds so an outage does not cost every request a timeout.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from broker.adapters.redis_connect import REDIS_FAILURES, RedisClient
from broker.core.policy import RateLimit

log = logging.getLogger(__name__)

# KEYS[1] the caller's key; ARGV[1] interval, ARGV[2] burst (requests). Times in µs.
# Returns 0 (allowed) or the µs to wait. Numbers are written with %.0f: Lua's tostring
# would print a 16-digit µs timestamp in exponent notation and lose precision.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allow_at = tat + interval - interval * tonumber(ARGV[2])
if allow_at > now then return math.ceil(allow_at - now) end
local new_tat = tat + interval
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return 0
"""

_FALLBACK_SECONDS = 5.0


def gcra(tat: float, now: float, limit: RateLimit) -> tuple[float, float]:
    """One GCRA step: (seconds to wait, 0 when allowed; the new theoretical arrival time)."""
    interval = 1.0 / limit.per_second
    tat = max(tat, now)
    allow_at = tat + interval - interval * limit.burst
    if allow_at > now:
        return allow_at - now, tat
    return 0.0, tat + interval


class LocalRateLimiter:
    """GCRA in process memory: for `memory://`, and the fallback while Redis is down."""

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._tats: dict[str, float] = {}

    async def acquire(self, caller: str, limit: RateLimit) -> float:
        now = self._monotonic()
        wait, tat = gcra(self._tats.get(caller, now), now, limit)
        self._tats[caller] = tat
        if len(self._tats) > 10_000:  # forget callers whose buckets are full again
            self._tats = {name: t for name, t in self._tats.items() if t > now}
        return wait


class RedisRateLimiter:
    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str,
        fallback: LocalRateLimiter | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._prefix = prefix
        self._script = client.register_script(_GCRA)
        self._fallback = fallback or LocalRateLimiter(monotonic=monotonic)
        self._monotonic = monotonic
        self._local_until = 0.0

    def key(self, caller: str) -> str:
        return f"{self._prefix}:ratelimit:{caller}"

    async def acquire(self, caller: str, limit: RateLimit) -> float:
        if self._monotonic() < self._local_until:
            return await self._fallback.acquire(caller, limit)
        interval_us = max(1, math.ceil(1_000_000 / limit.per_second))
        try:
            wait_us = await self._script(keys=[self.key(caller)], args=[interval_us, limit.burst])
        except REDIS_FAILURES as exc:
            self._local_until = self._monotonic() + _FALLBACK_SECONDS
            log.warning(
                "rate limits shared through redis unavailable, limiting in process",
                extra={"error": type(exc).__name__},
            )
            return await self._fallback.acquire(caller, limit)
        return int(wait_us) / 1_000_000
