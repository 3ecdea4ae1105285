"""`IdPBackoff`: one shared "next IdP attempt" per failing realm.

After each consecutive failure the realm waits on a capped exponential schedule with
jitter (`backoff.backoff_delay`). The schedule lives in the token store, so every
replica honours the same next attempt and an outage does not become a retry storm; a
replica that cannot reach the store keeps its own copy. While a realm waits, requests
that need the IdP get the kind of its last failure, with `Retry-After`.
"""

from __future__ import annotations

import contextlib
import math

from broker.core.backoff import backoff_delay
from broker.core.errors import (
    IdPBadResponse,
    IdPOriginNotAllowed,
    IdPRejected,
    IdPUnavailable,
    StoreUnavailable,
    UpstreamError,
)
from broker.core.models import Backoff
from broker.core.ports import Clock, TokenStore
from broker.core.realm_state import RealmState


class IdPBackoff:
    def __init__(self, store: TokenStore, clock: Clock, *, base: float, cap: float) -> None:
        self._store = store
        self._clock = clock
        self._base = base
        self._cap = cap

    async def _current(self, state: RealmState) -> Backoff | None:
        local = state.backoff
        try:
            shared = await self._store.get_backoff(state.key)
        except StoreUnavailable:
            return local
        if shared is not None and (local is None or shared.next_attempt_at > local.next_attempt_at):
            return shared
        return local

    async def check(self, state: RealmState) -> None:
        """Raise the last failure's kind, with Retry-After, while the realm must wait."""
        backoff = await self._current(state)
        now = self._clock.now()
        if backoff is not None and backoff.next_attempt_at > now:
            raise error_from_code(
                backoff.error, retry_after=max(1, math.ceil(backoff.next_attempt_at - now))
            )

    async def failed(self, state: RealmState, exc: UpstreamError) -> str:
        """Schedule the next attempt after `exc`; returns the failure's code."""
        code = exc.slug + (f":{exc.reason}" if isinstance(exc, IdPRejected) else "")
        state.last_error = code
        previous = await self._current(state)
        failures = (previous.failures if previous else 0) + 1
        delay = backoff_delay(failures, base=self._base, cap=self._cap)
        state.backoff = Backoff(failures, self._clock.now() + delay, code)
        with contextlib.suppress(StoreUnavailable):
            await self._store.set_backoff(state.key, state.backoff)
        return code

    async def succeeded(self, state: RealmState) -> None:
        state.last_error = None
        state.last_refresh = self._clock.now()
        if state.backoff is not None:
            await self.clear(state)

    async def clear(self, state: RealmState) -> None:
        state.backoff = None
        with contextlib.suppress(StoreUnavailable):
            await self._store.clear_backoff(state.key)


def error_from_code(code: str, *, retry_after: int) -> UpstreamError:
    """The error a waiting realm answers with: the kind of its last failure."""
    slug, _, reason = code.partition(":")
    detail = f"the identity provider failed recently; next attempt in {retry_after} s"
    if slug == IdPRejected.slug:
        rejected = IdPRejected(detail, reason=reason or "rejected")
        rejected.retry_after = retry_after
        return rejected
    if slug == IdPBadResponse.slug:
        return IdPBadResponse(detail, retry_after=retry_after)
    if slug == IdPOriginNotAllowed.slug:
        # Still a configuration error while the realm waits, not an outage.
        return IdPOriginNotAllowed(
            "the realm's IdP URL is not at an allowed origin", retry_after=retry_after
        )
    return IdPUnavailable(detail, retry_after=retry_after)
