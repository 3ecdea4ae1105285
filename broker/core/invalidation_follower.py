"""`InvalidationFollower`: keep this replica's tokens consistent with every other replica's
evictions and rotations.

It follows the store's invalidation stream: an invalidation above a realm's
`shared_generation` drops the realm's token (and, after a rotation, its credentials, so
the next fetch re-reads them). When the stream (re)subscribes, invalidations may have been
missed, so a catch-up compares each held token with the store: what was evicted
meanwhile is dropped, and what the store lost (a restarted Redis) is shared again. One
catch-up runs at a time: a new subscription cancels the running one and waits for it
before starting the next, and stopping the follower stops its catch-up.
"""

from __future__ import annotations

import asyncio

from broker.core import rules
from broker.core.cancellation import cancel_and_wait
from broker.core.errors import StoreUnavailable
from broker.core.ports import Clock, TokenStore
from broker.core.realm_state import RealmRegistry


class InvalidationFollower:
    def __init__(
        self,
        *,
        registry: RealmRegistry,
        store: TokenStore,
        clock: Clock,
        expiry_skew: float,
        retry_min: float = 0.2,
        retry_max: float = 5.0,
    ) -> None:
        self._registry = registry
        self._store = store
        self._clock = clock
        self._skew = expiry_skew
        self._retry_min = retry_min
        self._retry_max = retry_max
        self._catching_up: asyncio.Task[None] | None = None

    async def follow(self) -> None:
        """Apply invalidations until cancelled (or the stream ends)."""
        try:
            async for item in self._store.invalidations():
                if item is None:
                    await self._restart_catch_up()
                    continue
                state = self._registry.get(item.realm)
                if state is None or item.generation <= state.shared_generation:
                    continue
                state.shared_generation = item.generation
                state.drop_token()
                if item.reason == "rotated":
                    state.credentials = None  # re-read from the secret source on next fetch
        finally:
            await self._stop_catch_up()

    async def _restart_catch_up(self) -> None:
        await self._stop_catch_up()
        self._catching_up = asyncio.create_task(self._catch_up_until_done(), name="catch-up")

    async def _stop_catch_up(self) -> None:
        task, self._catching_up = self._catching_up, None
        if task is not None:
            await cancel_and_wait(task)

    async def _catch_up_until_done(self) -> None:
        delay = self._retry_min
        while not await self.catch_up():
            await self._clock.sleep(delay)
            delay = min(delay * 2, self._retry_max)

    async def catch_up(self) -> bool:
        """Drop what was evicted while unsubscribed, share again what the store lost.
        Returns whether it got through."""
        for state in self._registry.all():
            token = state.token
            if token is None:
                continue
            try:
                cached = await self._store.get(state.key)
                if state.see_generation(cached.generation):
                    state.credentials = None
                    continue
                ttl = rules.cache_ttl(token, now=self._clock.now(), skew=self._skew)
                if cached.token is None and ttl > 0:
                    await self._store.put(
                        state.key,
                        token,
                        ttl,
                        generation=state.shared_generation,
                        only_if_absent=True,
                    )
            except StoreUnavailable:
                return False
        return True
