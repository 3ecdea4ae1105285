"""`TokenSupply`: a realm's token from below the in-process cache, one load at a time.

A load reads the shared store first and takes its token when it suits every waiter;
otherwise the peer coordinator decides who asks the IdP (this replica under the store's
lock, or a peer whose token is then adopted). A fetched token is shared through the store
unless the realm was evicted or rotated since the load began, on this replica
(`local_epoch`) or any other (`shared_generation`): then the load is superseded and its
waiters start over, a bounded number of times.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from broker.core import rules
from broker.core.errors import RealmUnsettled, StoreUnavailable
from broker.core.min_ttl_guard import MinTtlGuard
from broker.core.models import AccessToken, IssuedToken, TokenSource
from broker.core.peer_coordinator import PeerCoordinator
from broker.core.ports import Clock, TokenStore
from broker.core.realm_fetcher import RealmFetcher
from broker.core.realm_state import RealmRegistry, RealmState
from broker.core.single_flight import (
    Demand,
    KeyedSingleFlight,
    Superseded,
    SupersededTooOften,
    Unsatisfied,
)

log = logging.getLogger(__name__)

Acceptable = Callable[[AccessToken], bool]

__all__ = ["TokenSupply", "Unsatisfied"]


class TokenSupply:
    def __init__(
        self,
        *,
        registry: RealmRegistry,
        store: TokenStore,
        fetcher: RealmFetcher,
        coordinator: PeerCoordinator,
        guard: MinTtlGuard,
        clock: Clock,
        expiry_skew: float,
        attempts: int = 3,
        supersessions: int = 3,
    ) -> None:
        self._registry = registry
        self._store = store
        self._fetcher = fetcher
        self._coordinator = coordinator
        self._guard = guard
        self._clock = clock
        self._skew = expiry_skew
        self._supersessions = supersessions
        self._flights: KeyedSingleFlight[str, IssuedToken] = KeyedSingleFlight(
            name="load", attempts=attempts, supersessions=supersessions
        )

    async def obtain(self, realm: str, acceptable: Acceptable) -> IssuedToken:
        """A token of `realm` that `acceptable` takes, from the store, a peer or the IdP.

        Raises Unsatisfied (the IdP's newest token does not suit), RealmUnsettled (every
        load was superseded by an eviction or rotation) or the fetch's own error."""

        def suits(issued: IssuedToken) -> bool:
            return acceptable(issued.token)

        async def load(demand: Demand[IssuedToken]) -> IssuedToken:
            return await self._load(self._registry.state(realm), demand)

        try:
            return await self._flights.run(realm, load, suits)
        except SupersededTooOften:
            raise RealmUnsettled(
                f"realm {realm!r} was evicted or rotated during each of "
                f"{self._supersessions} fetches; try again",
            ) from None

    def running(self, realm: str) -> bool:
        return self._flights.running(realm)

    async def aclose(self) -> None:
        await self._flights.aclose()

    async def _load(self, state: RealmState, demand: Demand[IssuedToken]) -> IssuedToken:
        epoch = state.local_epoch

        def acceptable(token: AccessToken) -> bool:
            return demand.accepts(IssuedToken(state.realm, token, TokenSource.REDIS))

        try:
            cached = await self._store.get(state.key)
        except StoreUnavailable as exc:
            log.warning(
                "token store unavailable, fetching alone",
                extra={"realm": state.key, "error": str(exc)},
            )
            newest = state.token
            if newest is not None and await self._forced_fetch_refused(state, demand, newest):
                return self._adopt(state, newest, epoch, source=TokenSource.MEMORY)
            return await self._fetch(state, demand, epoch=epoch, generation=None)
        state.see_generation(cached.generation)
        if cached.token is not None and acceptable(cached.token):
            return self._adopt(state, cached.token, epoch)
        # The newest token known: the store's, or ours when the store lost it (a restart).
        newest = cached.token if cached.token is not None else state.token
        if newest is not None and await self._forced_fetch_refused(state, demand, newest):
            source = TokenSource.REDIS if newest is cached.token else TokenSource.MEMORY
            return self._adopt(state, newest, epoch, source=source)

        async def locked() -> IssuedToken:
            return await self._fetch_locked(state, demand, acceptable, epoch)

        async def alone(store_reachable: bool) -> IssuedToken:
            generation = cached.generation if store_reachable else None
            return await self._fetch(state, demand, epoch=epoch, generation=generation)

        return await self._coordinator.coordinate(
            state.key,
            acceptable,
            locked=locked,
            alone=alone,
            adopt=lambda token: self._adopt(state, token, epoch),
        )

    async def _fetch_locked(
        self,
        state: RealmState,
        demand: Demand[IssuedToken],
        acceptable: Acceptable,
        epoch: int,
    ) -> IssuedToken:
        # A peer may have stored a token between our miss and our lock.
        generation: int | None = None
        try:
            cached = await self._store.get(state.key)
        except StoreUnavailable:
            pass
        else:
            state.see_generation(cached.generation)
            if cached.token is not None and acceptable(cached.token):
                return self._adopt(state, cached.token, epoch)
            generation = cached.generation
        return await self._fetch(state, demand, epoch=epoch, generation=generation)

    async def _fetch(
        self,
        state: RealmState,
        demand: Demand[IssuedToken],
        *,
        epoch: int,
        generation: int | None,
    ) -> IssuedToken:
        """One IdP request, its token stored unless superseded. `generation` is the
        store's when the load began, or None when the store is out of reach (then the
        token stays in this process)."""
        token = await self._fetcher.fetch(state, before_request=demand.commit)
        if state.local_epoch != epoch:
            raise Superseded
        if generation is not None:
            ttl = rules.cache_ttl(token, now=self._clock.now(), skew=self._skew)
            try:
                if not await self._store.put(state.key, token, ttl, generation=generation):
                    raise Superseded
            except StoreUnavailable as exc:
                log.warning("could not share token", extra={"realm": state.key, "error": str(exc)})
        state.keep(token)
        return IssuedToken(state.realm, token, TokenSource.IDP)

    async def _forced_fetch_refused(
        self, state: RealmState, demand: Demand[IssuedToken], newest: AccessToken
    ) -> bool:
        """Whether replacing `newest` would be a forced fetch and its window is closed.
        Then `newest` is final for the waiters present: it is all there is for now."""
        if not self._guard.forces_fetch(state, newest) or await self._guard.claim(state):
            return False
        demand.commit()
        return True

    def _adopt(
        self,
        state: RealmState,
        token: AccessToken,
        epoch: int,
        *,
        source: TokenSource = TokenSource.REDIS,
    ) -> IssuedToken:
        if state.local_epoch != epoch:
            raise Superseded
        state.keep(token)
        return IssuedToken(state.realm, token, source)
