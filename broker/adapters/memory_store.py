"""`MemoryTokenStore`: the embedded store for a single process (`BROKER_REDIS_URL=memory://`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from broker.core import rules
from broker.core.models import AccessToken, Backoff, Cached, Invalidation
from broker.core.ports import Clock

# A tombstone outlives any fetch that began before the eviction it records.
TOMBSTONE_TTL = 3600.0


class MemoryTokenStore:
    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._tokens: dict[str, tuple[AccessToken | None, int, float]] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._backoffs: dict[str, Backoff] = {}
        self._forced: dict[str, float] = {}  # realm -> when its forced-fetch window closes
        self._listeners: list[asyncio.Queue[Invalidation]] = []

    def _entry(self, realm: str) -> tuple[AccessToken | None, int] | None:
        entry = self._tokens.get(realm)
        if entry is None or entry[2] <= self._clock.now():
            self._tokens.pop(realm, None)
            return None
        return entry[0], entry[1]

    async def get(self, realm: str) -> Cached:
        entry = self._entry(realm)
        return Cached(None, 0) if entry is None else Cached(entry[0], entry[1])

    async def put(
        self,
        realm: str,
        token: AccessToken,
        ttl: float,
        *,
        generation: int,
        only_if_absent: bool = False,
    ) -> bool:
        entry = self._entry(realm)
        # As in Redis, whose expiry is in whole milliseconds: less than one is nothing left.
        if int(ttl * 1000) <= 0:
            return False
        if entry is not None and (only_if_absent or generation < entry[1]):
            return False
        self._tokens[realm] = (token, generation, self._clock.now() + ttl)
        return True

    async def evict(self, realm: str, *, reason: str) -> int:
        entry = self._entry(realm)
        generation = (entry[1] if entry else 0) + 1
        self._tokens[realm] = (None, generation, self._clock.now() + TOMBSTONE_TTL)
        for queue in self._listeners:
            queue.put_nowait(Invalidation(realm, generation, reason))
        return generation

    async def scoped_slots(self, realm: str) -> list[str]:
        return sorted(
            slot for slot in self._tokens if slot != realm and rules.split_slot(slot)[0] == realm
        )

    async def invalidations(self) -> AsyncIterator[Invalidation | None]:
        queue: asyncio.Queue[Invalidation] = asyncio.Queue()
        self._listeners.append(queue)
        try:
            yield None
            while True:
                yield await queue.get()
        finally:
            self._listeners.remove(queue)

    def _holder(self, realm: str) -> str | None:
        entry = self._locks.get(realm)
        if entry is None or entry[1] <= self._clock.now():
            self._locks.pop(realm, None)
            return None
        return entry[0]

    async def acquire_lock(self, realm: str, owner: str, lease: float) -> bool:
        if self._holder(realm) is not None:
            return False
        self._locks[realm] = (owner, self._clock.now() + lease)
        return True

    async def extend_lock(self, realm: str, owner: str, lease: float) -> bool:
        if self._holder(realm) != owner:
            return False
        self._locks[realm] = (owner, self._clock.now() + lease)
        return True

    async def release_lock(self, realm: str, owner: str) -> None:
        if self._holder(realm) == owner:
            del self._locks[realm]

    async def lock_held(self, realm: str) -> bool:
        return self._holder(realm) is not None

    async def claim_forced_fetch(self, realm: str, interval: float) -> float:
        now = self._clock.now()
        until = self._forced.get(realm, 0.0)
        if until > now:
            return until - now
        self._forced[realm] = now + interval
        return 0.0

    async def get_backoff(self, realm: str) -> Backoff | None:
        return self._backoffs.get(realm)

    async def set_backoff(self, realm: str, backoff: Backoff) -> None:
        self._backoffs[realm] = backoff

    async def clear_backoff(self, realm: str) -> None:
        self._backoffs.pop(realm, None)

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        self._tokens.clear()
        self._locks.clear()
