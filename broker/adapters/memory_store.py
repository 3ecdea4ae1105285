"""`MemoryTokenStore`: the embedded store for a single process (`BROKER_REDIS_URL=memory://`)."""

from __future__ import annotations

from broker.core.models import AccessToken
from broker.core.ports import Clock


class MemoryTokenStore:
    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._tokens: dict[str, tuple[AccessToken, float]] = {}
        self._locks: dict[str, tuple[str, float]] = {}

    async def get(self, realm: str) -> AccessToken | None:
        entry = self._tokens.get(realm)
        if entry is None or entry[1] <= self._clock.now():
            self._tokens.pop(realm, None)
            return None
        return entry[0]

    async def put(self, realm: str, token: AccessToken, ttl: float) -> None:
        if ttl > 0:
            self._tokens[realm] = (token, self._clock.now() + ttl)

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

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        self._tokens.clear()
        self._locks.clear()
