"""`MinTtlGuard`: a caller's `min_ttl` cannot turn the broker into an IdP hammer.

Two rules, both answered with 422 `min-ttl-unsatisfiable` instead of an IdP request:

- **No token can meet it.** The broker learns each realm's token lifetime from the newest
  token it has seen; a `min_ttl` above that lifetime (less the expiry skew) is refused
  without asking the IdP.
- **A forced fetch at most once per interval.** A fetch is *forced* when the realm's
  newest token is still valid, not yet due for refresh and from the current secret, and
  only a `min_ttl` above its remaining life asks for another. Such fetches happen at most
  once per realm per `interval` seconds (`BROKER_FORCED_FETCH_INTERVAL`), a window shared
  by every replica through the store (this replica's own copy while the store is out of
  reach); inside the window the request gets 422 with `Retry-After`.

Fetches that are not forced (a cold realm, a refresh, a new secret) are never limited.
"""

from __future__ import annotations

import math

from broker.core import rules
from broker.core.errors import MinTtlUnsatisfiable, StoreUnavailable
from broker.core.models import AccessToken, IssuedToken, TokenSource
from broker.core.ports import Clock, TokenStore
from broker.core.realm_state import RealmState


class MinTtlGuard:
    def __init__(
        self,
        store: TokenStore,
        clock: Clock,
        *,
        interval: float,
        expiry_skew: float,
        refresh_before: float,
    ) -> None:
        self._store = store
        self._clock = clock
        self._interval = interval
        self._skew = expiry_skew
        self._refresh_before = refresh_before

    def longest_possible(self, state: RealmState) -> float | None:
        """The most validity a new token of the realm would have, once one was seen."""
        lifetime = state.token_lifetime
        return None if lifetime is None else lifetime - self._skew

    def check_reach(self, state: RealmState, min_ttl: float) -> None:
        """Raise MinTtlUnsatisfiable when no token of the realm can meet `min_ttl`, as far
        as the tokens seen so far tell."""
        longest = self.longest_possible(state)
        if longest is not None and min_ttl > longest:
            raise MinTtlUnsatisfiable(
                f"tokens of realm {state.realm!r} live {int(longest)} s; "
                f"min_ttl {int(min_ttl)} cannot be met"
            )

    def refusal(
        self, state: RealmState, min_ttl: float, newest: IssuedToken
    ) -> MinTtlUnsatisfiable:
        """The error for a request the newest token (`newest`) cannot satisfy: with
        Retry-After when only the forced-fetch window stood in the way."""
        retry_after = None if newest.source is TokenSource.IDP else self.retry_after(state)
        if retry_after is None:
            return MinTtlUnsatisfiable(
                f"tokens of realm {state.realm!r} live {int(newest.token.lifetime())} s; "
                f"min_ttl {int(min_ttl)} cannot be met"
            )
        return MinTtlUnsatisfiable(
            f"the newest token of realm {state.realm!r} has less than {int(min_ttl)} s left "
            f"and a new one was fetched recently; try again in {retry_after} s",
            retry_after=retry_after,
        )

    def forces_fetch(self, state: RealmState, newest: AccessToken) -> bool:
        """Whether replacing `newest` now would be a fetch forced by a `min_ttl` alone."""
        now = self._clock.now()
        if rules.remaining(newest, now=now, skew=self._skew) <= 0:
            return False  # expired: any request needs a new one
        refresh_at = rules.refresh_at(newest, skew=self._skew, refresh_before=self._refresh_before)
        if now >= refresh_at:
            return False  # due for refresh anyway
        current = state.credentials
        return current is None or newest.credential_version >= current.version

    async def claim(self, state: RealmState) -> bool:
        """Open the realm's forced-fetch window; False when one is open already."""
        try:
            left = await self._store.claim_forced_fetch(state.key, self._interval)
        except StoreUnavailable:
            left = max(0.0, state.forced_window_until - self._clock.monotonic())
            if left == 0.0:
                state.forced_window_until = self._clock.monotonic() + self._interval
                return True
        else:
            if left == 0.0:
                state.forced_window_until = self._clock.monotonic() + self._interval
                return True
            state.forced_window_until = self._clock.monotonic() + left
        return False

    def retry_after(self, state: RealmState) -> int | None:
        """Whole seconds until a forced fetch may happen again, if a window is open."""
        left = state.forced_window_until - self._clock.monotonic()
        return max(1, math.ceil(left)) if left > 0 else None
