"""`RefreshScheduler`: fetch each token's successor ahead of its expiry, so in steady state
no caller waits on the IdP.

One refresher per realm in use, run by the task supervisor. It sleeps until the held
token's refresh point (`rules.refresh_at`) and is woken early whenever the realm's token
changes (the registry tells the scheduler; the part that changed it knows nothing of
refreshing), so a shorter-lived successor is refreshed on its own schedule. A realm nobody
asked for during a whole token lifetime is left to lapse.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from broker.core import rules
from broker.core.cancellation import cancel_and_wait
from broker.core.errors import BrokerError
from broker.core.models import AccessToken, IssuedToken
from broker.core.ports import Clock
from broker.core.realm_state import RealmRegistry, RealmState
from broker.core.single_flight import Unsatisfied
from broker.core.supervisor import TaskSupervisor

log = logging.getLogger(__name__)

Obtain = Callable[[str, Callable[[AccessToken], bool]], Awaitable[IssuedToken]]


@dataclass(frozen=True, slots=True)
class RefreshTimings:
    expiry_skew: float = 30.0
    refresh_before: float = 300.0
    retry_min: float = 1.0
    retry_max: float = 30.0


class RefreshScheduler:
    def __init__(
        self,
        *,
        registry: RealmRegistry,
        obtain: Obtain,
        clock: Clock,
        supervisor: TaskSupervisor,
        timings: RefreshTimings,
    ) -> None:
        self._registry = registry
        self._obtain = obtain
        self._clock = clock
        self._supervisor = supervisor
        self._timings = timings
        self._token_changed: dict[str, asyncio.Event] = {}
        registry.on_token_change(self._on_token_change)

    @staticmethod
    def task_name(realm: str) -> str:
        return f"refresh:{realm}"

    def due_at(self, token: AccessToken) -> float:
        """Wall time at which `token`'s successor is fetched."""
        return rules.refresh_at(
            token, skew=self._timings.expiry_skew, refresh_before=self._timings.refresh_before
        )

    def _on_token_change(self, state: RealmState) -> None:
        changed = self._token_changed.get(state.key)
        if changed is not None:
            changed.set()
        if state.token is not None:
            realm = state.key
            self._supervisor.start(self.task_name(realm), lambda: self._refresh(realm))

    async def _refresh(self, realm: str) -> None:
        changed = self._token_changed.setdefault(realm, asyncio.Event())
        try:
            await self._refresh_loop(realm, changed)
        finally:
            if self._token_changed.get(realm) is changed:
                del self._token_changed[realm]

    async def _refresh_loop(self, realm: str, changed: asyncio.Event) -> None:
        retry = self._timings.retry_min
        while True:
            state = self._registry.get(realm)
            token = state.token if state is not None else None
            if state is None or token is None:
                return
            now = self._clock.now()
            due = self.due_at(token)
            if now < due:
                changed.clear()
                await self._sleep_unless(changed, due - now)
                continue
            if state.last_used < self._clock.monotonic() - token.lifetime():
                return  # idle for a whole lifetime: let the token lapse
            if rules.remaining(token, now=now, skew=self._timings.expiry_skew) <= 0:
                state.drop_token()
                return

            def fresher(candidate: AccessToken) -> bool:
                return self.due_at(candidate) > self._clock.now()

            try:
                await self._obtain(realm, fresher)
                retry = self._timings.retry_min
            except Unsatisfied:
                # Tokens too short-lived to refresh ahead: do not spin on the IdP.
                await self._clock.sleep(retry)
            except BrokerError as exc:
                log.warning("background refresh failed", extra={"realm": realm, "error": exc.slug})
                await self._clock.sleep(exc.retry_after or retry)
                retry = min(retry * 2, self._timings.retry_max)

    async def _sleep_unless(self, event: asyncio.Event, seconds: float) -> None:
        """Sleep `seconds` on the clock, or less if `event` is set meanwhile."""
        sleeper = asyncio.create_task(self._clock.sleep(seconds))
        waiter = asyncio.create_task(event.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(sleeper, waiter)
