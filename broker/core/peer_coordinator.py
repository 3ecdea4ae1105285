"""`PeerCoordinator`: one IdP request per realm across replicas.

The replica that takes the realm's lock in the shared store does the work, keeping the
lock's lease alive while the IdP answers slowly; the others poll the store until the
holder's token appears, the lock goes (the holder failed or died), or `peer_wait` passes,
and only then work themselves. When the store is out of reach each replica works alone.
Deadlines are on the clock's monotonic reading and every wait sleeps through the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from broker.core.cancellation import cancel_and_wait
from broker.core.errors import StoreUnavailable
from broker.core.models import AccessToken
from broker.core.ports import Clock, TokenStore

log = logging.getLogger(__name__)

R = TypeVar("R")
Acceptable = Callable[[AccessToken], bool]


@dataclass(frozen=True, slots=True)
class PeerTimings:
    lease: float = 15.0
    poll_min: float = 0.01
    poll_max: float = 0.1
    peer_wait: float = 30.0


class PeerCoordinator:
    def __init__(self, store: TokenStore, clock: Clock, timings: PeerTimings) -> None:
        self._store = store
        self._clock = clock
        self._timings = timings

    async def coordinate(
        self,
        realm: str,
        acceptable: Acceptable,
        *,
        locked: Callable[[], Awaitable[R]],
        alone: Callable[[bool], Awaitable[R]],
        adopt: Callable[[AccessToken], R],
    ) -> R:
        """`locked()` while holding the realm's lock; `adopt(token)` when a peer stored an
        acceptable token; `alone(store_reachable)` when the store is unreachable (False)
        or the peer too slow (True)."""
        owner = uuid.uuid4().hex
        deadline = self._clock.monotonic() + self._timings.peer_wait
        while True:
            try:
                got_lock = await self._store.acquire_lock(realm, owner, self._timings.lease)
            except StoreUnavailable:
                return await alone(False)
            if got_lock:
                try:
                    return await self._holding(realm, owner, locked)
                finally:
                    with contextlib.suppress(StoreUnavailable):
                        await self._store.release_lock(realm, owner)
            shared = await self.await_peer(realm, acceptable, deadline=deadline)
            if shared is not None:
                return adopt(shared)
            if self._clock.monotonic() >= deadline:
                log.warning(
                    "peer fetch did not finish in time, fetching alone", extra={"realm": realm}
                )
                return await alone(True)

    async def _holding(self, realm: str, owner: str, work: Callable[[], Awaitable[R]]) -> R:
        keeper = asyncio.create_task(self.keep_lease(realm, owner), name=f"lease:{realm}")
        try:
            return await work()
        finally:
            await cancel_and_wait(keeper)

    async def keep_lease(self, realm: str, owner: str) -> None:
        """Extend the lock while the work runs, so a slow IdP does not let a second replica
        start a duplicate fetch. Ends when the lock is lost or the store unreachable."""
        while True:
            await self._clock.sleep(self._timings.lease / 3)
            try:
                if not await self._store.extend_lock(realm, owner, self._timings.lease):
                    return
            except StoreUnavailable:
                return

    async def await_peer(
        self, realm: str, acceptable: Acceptable, *, deadline: float
    ) -> AccessToken | None:
        """Poll the store until the holder's acceptable token appears (returned), the lock
        goes, the store fails or the monotonic `deadline` passes (None)."""
        interval = self._timings.poll_min
        while self._clock.monotonic() < deadline:
            await self._clock.sleep(interval)
            interval = min(interval * 2, self._timings.poll_max)
            try:
                cached = await self._store.get(realm)
                if cached.token is not None and acceptable(cached.token):
                    return cached.token
                if not await self._store.lock_held(realm):
                    # The holder stored nothing good and left; one last look, then compete.
                    cached = await self._store.get(realm)
                    good = cached.token is not None and acceptable(cached.token)
                    return cached.token if good else None
            except StoreUnavailable:
                return None
        return None
