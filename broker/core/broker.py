"""`TokenBroker`: hands out realm tokens, fetching each one once however many ask.

Read path, fastest first: the in-process cache, the shared store (Redis), the IdP.
Misses for one realm share one fetch: in-process through a shared task, across replicas
through the store's lock; replicas that lose the lock wait for the winner's token to
appear in the store instead of calling the IdP. A refresher per realm fetches the
successor ahead of expiry, so in steady state no caller waits on the IdP.

Consistency: every eviction or rotation raises the realm's generation in the store and
is broadcast; a fetch that began before it cannot store or serve its token (it is
superseded and the read starts over). When the store fails the broker serves on its own
and shares again once it is back.

Failures: a failing IdP is retried on a capped exponential schedule whose "next attempt"
is shared through the store (`IdPBackoff`), so replicas do not turn an outage into a
retry storm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from broker.core import rules
from broker.core.audit import AuditRecorder
from broker.core.context import RequestContext
from broker.core.errors import (
    BrokerError,
    Forbidden,
    IdPBadResponse,
    IdPRejected,
    MinTtlUnsatisfiable,
    RealmNotFound,
    StoreUnavailable,
    UpstreamError,
)
from broker.core.idp_backoff import IdPBackoff
from broker.core.models import (
    AccessToken,
    IssuedToken,
    RealmCredentials,
    RealmStatus,
    TokenSource,
)
from broker.core.policy import Caller
from broker.core.ports import AuditSink, Clock, SecretSource, TokenIssuer, TokenStore
from broker.core.realm_state import RealmState

log = logging.getLogger(__name__)

Acceptable = Callable[[AccessToken], bool]

# OAuth2 errors that mean "these credentials are wrong": the secret may have been rotated.
_CREDENTIAL_ERRORS = {"invalid_client", "unauthorized_client"}


@dataclass(frozen=True, slots=True)
class BrokerTimings:
    """Tunables of the read path; the defaults suit production."""

    expiry_skew: float = 30.0
    refresh_before: float = 300.0
    lock_lease: float = 15.0
    peer_poll_min: float = 0.01
    peer_poll_max: float = 0.1
    peer_wait: float = 30.0
    refresh_retry_min: float = 1.0
    refresh_retry_max: float = 30.0
    idp_backoff_base: float = 1.0
    idp_backoff_max: float = 60.0
    vault_poll: float = 30.0


class _Superseded(Exception):
    """A fetch finished after an eviction or rotation of its realm: its token is stale."""


class TokenBroker:
    def __init__(
        self,
        *,
        secrets: SecretSource,
        issuer: TokenIssuer,
        store: TokenStore,
        audit: AuditSink,
        clock: Clock,
        timings: BrokerTimings | None = None,
    ) -> None:
        self._secrets = secrets
        self._issuer = issuer
        self._store = store
        self._audit = AuditRecorder(audit, clock)
        self._clock = clock
        self._t = timings or BrokerTimings()
        self._backoff = IdPBackoff(
            store, clock, base=self._t.idp_backoff_base, cap=self._t.idp_backoff_max
        )
        self._realms: dict[str, RealmState] = {}
        self._flights: dict[str, asyncio.Task[IssuedToken]] = {}
        self._refreshers: dict[str, asyncio.Task[None]] = {}
        self._background: list[asyncio.Task[None]] = []
        self._catching_up: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Follow invalidations from other replicas and watch Vault for new versions."""
        self._background = [
            self._spawn(self._follow_invalidations, "invalidations"),
            self._spawn(self._watch_versions, "vault-watch"),
        ]

    def _spawn(
        self, loop: Callable[[], Coroutine[Any, Any, None]], name: str
    ) -> asyncio.Task[None]:
        async def resilient() -> None:
            while True:
                try:
                    await loop()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("background task failed, restarting", extra={"task": name})
                    await asyncio.sleep(1.0)

        return asyncio.create_task(resilient(), name=name)

    async def aclose(self) -> None:
        """Stop background work and in-flight fetches."""
        tasks = [*self._background, *self._refreshers.values(), *self._flights.values()]
        if self._catching_up is not None:
            tasks.append(self._catching_up)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._background.clear()
        self._refreshers.clear()
        self._flights.clear()

    # -- public API -------------------------------------------------------------------

    def now(self) -> float:
        return self._clock.now()

    def has_credentials(self) -> bool:
        """Whether any realm's credentials are loaded (serving survives a Vault outage)."""
        return any(state.credentials is not None for state in self._realms.values())

    async def issue(
        self, caller: Caller, realm: str, *, min_ttl: float, ctx: RequestContext
    ) -> IssuedToken:
        """A token for `realm` with at least `min_ttl` seconds left, if `caller` may have it.

        Authorization comes first, so a refused caller learns nothing about the realm.
        """
        if not caller.may_use(realm):
            await self._audit_denied(caller.name, realm, "realm-not-allowed", ctx)
            raise Forbidden(f"caller {caller.name!r} may not use realm {realm!r}")
        try:
            issued = await self.token(realm, min_ttl=min_ttl)
        except BrokerError as exc:
            await self._audit_denied(caller.name, realm, exc.slug, ctx)
            raise
        await self._audit.record(
            "token.issued",
            realm=realm,
            caller=caller.name,
            source=issued.source.value,
            token=issued.token,
            ctx=ctx,
        )
        return issued

    async def token(self, realm: str, *, min_ttl: float = 60.0) -> IssuedToken:
        """A token for `realm` with at least `min_ttl` seconds of validity left."""
        state = self._state(realm)
        now = self._clock.now()
        state.last_used = now
        cached = state.token
        if cached is not None and self._satisfies(cached, now, min_ttl):
            return IssuedToken(realm, cached, TokenSource.MEMORY)

        def enough(token: AccessToken) -> bool:
            return self._satisfies(token, self._clock.now(), min_ttl)

        for _ in range(2):
            try:
                issued = await self._obtain(realm, enough)
            except RealmNotFound:
                # Forget names that are no realm, so guesses do not accumulate as state.
                if state.token is None and state.credentials is None:
                    self._realms.pop(realm, None)
                raise
            if enough(issued.token):
                return issued
            if issued.source is TokenSource.IDP:
                raise MinTtlUnsatisfiable(
                    f"tokens of realm {realm!r} live {int(issued.token.lifetime())} s; "
                    f"min_ttl {int(min_ttl)} cannot be met"
                )
            # We joined a flight started for a laxer request: go round once more.
        raise MinTtlUnsatisfiable(f"no token of realm {realm!r} lives {int(min_ttl)} s")

    async def rotate(self, realm: str, *, actor: str, ctx: RequestContext) -> RealmStatus:
        """Re-read the realm's credentials, drop its token on every replica, fetch anew."""
        state = self._state(realm)
        credentials = await self._secrets.credentials(realm)
        state.credentials = credentials
        await self._evict_everywhere(state, reason="rotated")
        await self._backoff.clear(state)
        await self._audit.record(
            "credentials.rotated",
            realm=realm,
            caller=actor,
            credential_version=credentials.version,
            reason="requested",
            ctx=ctx,
        )
        await self._obtain(realm, lambda token: True)
        return self.realm_status(realm)

    async def evict(self, realm: str, *, actor: str, ctx: RequestContext) -> None:
        """Drop the realm's cached token on every replica (a suspected leak)."""
        state = self._state(realm)
        evicted = state.token
        try:
            await self._evict_everywhere(state, reason="evicted")
        finally:
            await self._audit.record(
                "token.evicted", realm=realm, caller=actor, token=evicted, ctx=ctx
            )

    def realm_status(self, realm: str) -> RealmStatus:
        state = self._state(realm)
        token = state.token
        valid = (
            token is not None
            and rules.remaining(token, now=self._clock.now(), skew=self._t.expiry_skew) > 0
        )
        return RealmStatus(
            realm=realm,
            cached=valid,
            expires_at=token.expires_at if token is not None and valid else None,
            last_refresh=state.last_refresh,
            credential_version=state.credentials.version if state.credentials else None,
            last_error=state.last_error,
        )

    def realm_statuses(self) -> dict[str, RealmStatus]:
        return {realm: self.realm_status(realm) for realm in sorted(self._realms)}

    # -- single flight ----------------------------------------------------------------

    def _state(self, realm: str) -> RealmState:
        state = self._realms.get(realm)
        if state is None:
            state = self._realms[realm] = RealmState(realm)
        return state

    def _satisfies(self, token: AccessToken, now: float, min_ttl: float) -> bool:
        return rules.satisfies(token, now=now, skew=self._t.expiry_skew, min_ttl=min_ttl)

    async def _obtain(self, realm: str, acceptable: Acceptable) -> IssuedToken:
        """Join the realm's in-flight load, or start one; start over when it was superseded."""
        while True:
            flight = self._flights.get(realm)
            # A finished flight stays in the map until its done-callback runs on the next
            # loop turn; awaiting it again would not yield, so start a new one instead.
            if flight is None or flight.done():
                flight = asyncio.create_task(self._load(realm, acceptable), name=f"load:{realm}")
                self._flights[realm] = flight
                flight.add_done_callback(lambda done: self._end_flight(realm, done))
            try:
                # shield: a caller that disconnects must not cancel the fetch others await.
                return await asyncio.shield(flight)
            except _Superseded:
                continue

    def _end_flight(self, realm: str, done: asyncio.Task[IssuedToken]) -> None:
        if self._flights.get(realm) is done:
            del self._flights[realm]
        if not done.cancelled():
            done.exception()  # mark retrieved: the waiters got it

    async def _load(self, realm: str, acceptable: Acceptable) -> IssuedToken:
        state = self._state(realm)
        epoch = state.epoch
        try:
            cached = await self._store.get(realm)
        except StoreUnavailable as exc:
            log.warning(
                "token store unavailable, fetching alone", extra={"realm": realm, "error": str(exc)}
            )
            return await self._fetch(state, epoch=epoch, generation=None)
        self._see_generation(state, cached.generation)
        if cached.token is not None and acceptable(cached.token):
            return self._adopt(state, cached.token, epoch)
        return await self._fetch_coordinated(state, acceptable, epoch, cached.generation)

    async def _fetch_coordinated(
        self, state: RealmState, acceptable: Acceptable, epoch: int, generation: int
    ) -> IssuedToken:
        """Fetch under the store's lock, or wait for the replica that holds it."""
        owner = uuid.uuid4().hex
        deadline = self._clock.now() + self._t.peer_wait
        while True:
            try:
                locked = await self._store.acquire_lock(state.realm, owner, self._t.lock_lease)
            except StoreUnavailable:
                return await self._fetch(state, epoch=epoch, generation=None)
            if locked:
                try:
                    return await self._fetch_locked(state, acceptable, epoch, owner)
                finally:
                    with contextlib.suppress(StoreUnavailable):
                        await self._store.release_lock(state.realm, owner)
            shared = await self._await_peer(state.realm, acceptable, deadline)
            if shared is not None:
                return self._adopt(state, shared, epoch)
            if self._clock.now() >= deadline:
                log.warning(
                    "peer fetch did not finish in time, fetching alone",
                    extra={"realm": state.realm},
                )
                return await self._fetch(state, epoch=epoch, generation=generation)

    async def _fetch_locked(
        self, state: RealmState, acceptable: Acceptable, epoch: int, owner: str
    ) -> IssuedToken:
        # A peer may have stored a token between our miss and our lock.
        generation: int | None = None
        with contextlib.suppress(StoreUnavailable):
            cached = await self._store.get(state.realm)
            self._see_generation(state, cached.generation)
            if cached.token is not None and acceptable(cached.token):
                return self._adopt(state, cached.token, epoch)
            generation = cached.generation
        keeper = asyncio.create_task(
            self._keep_lease(state.realm, owner), name=f"lease:{state.realm}"
        )
        try:
            return await self._fetch(state, epoch=epoch, generation=generation)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _keep_lease(self, realm: str, owner: str) -> None:
        """Extend the lock while the IdP call is in flight, so a slow IdP does not let a
        second replica start a duplicate fetch."""
        while True:
            await asyncio.sleep(self._t.lock_lease / 3)
            try:
                if not await self._store.extend_lock(realm, owner, self._t.lock_lease):
                    return
            except StoreUnavailable:
                return

    async def _await_peer(
        self, realm: str, acceptable: Acceptable, deadline: float
    ) -> AccessToken | None:
        """Poll the store until the lock holder's token appears, the lock goes (the holder
        failed or died), or the deadline passes."""
        interval = self._t.peer_poll_min
        while self._clock.now() < deadline:
            await asyncio.sleep(interval)
            interval = min(interval * 2, self._t.peer_poll_max)
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

    # -- fetching ---------------------------------------------------------------------

    async def _fetch(self, state: RealmState, *, epoch: int, generation: int | None) -> IssuedToken:
        """One IdP request (after the shared backoff allows it), stored unless superseded.

        `generation` is the store's generation when the read began, or None when the
        store is out of reach (then the token stays in this process).
        """
        await self._backoff.check(state)
        credentials = await self._credentials_for(state)
        try:
            token = await self._fetch_with(state, credentials)
            if rules.cache_ttl(token, now=self._clock.now(), skew=self._t.expiry_skew) <= 0:
                raise IdPBadResponse("the IdP issued a token that expires within the skew")
        except UpstreamError as exc:
            code = await self._backoff.failed(state, exc)
            await self._audit.record(
                "token.fetch_failed",
                realm=state.realm,
                reason=code,
                credential_version=credentials.version,
                outcome="failure",
            )
            raise
        await self._backoff.succeeded(state)
        await self._audit.record(
            "token.fetched",
            realm=state.realm,
            source=TokenSource.IDP.value,
            token=token,
            credential_version=token.credential_version,
        )
        if state.epoch != epoch:
            raise _Superseded
        if generation is not None:
            ttl = rules.cache_ttl(token, now=self._clock.now(), skew=self._t.expiry_skew)
            try:
                if not await self._store.put(state.realm, token, ttl, generation=generation):
                    raise _Superseded
            except StoreUnavailable as exc:
                log.warning(
                    "could not share token", extra={"realm": state.realm, "error": str(exc)}
                )
        self._remember(state, token)
        return IssuedToken(state.realm, token, TokenSource.IDP)

    async def _fetch_with(self, state: RealmState, credentials: RealmCredentials) -> AccessToken:
        """Fetch; when the IdP calls the credentials wrong, re-read Vault once and, if the
        secret changed there, retry with the new one."""
        try:
            return await self._issuer.fetch(credentials)
        except IdPRejected as exc:
            if exc.reason not in _CREDENTIAL_ERRORS:
                raise
            try:
                fresh = await self._secrets.credentials(state.realm)
            except BrokerError:
                raise exc from None
            if fresh.version == credentials.version:
                raise
            await self._use_credentials(state, fresh, reason="idp-rejected")
            return await self._issuer.fetch(fresh)

    async def _credentials_for(self, state: RealmState) -> RealmCredentials:
        if state.credentials is not None:
            return state.credentials
        credentials = await self._secrets.credentials(state.realm)
        state.credentials = credentials
        await self._audit.record(
            "credentials.loaded", realm=state.realm, credential_version=credentials.version
        )
        return credentials

    async def _use_credentials(
        self, state: RealmState, credentials: RealmCredentials, *, reason: str
    ) -> None:
        state.credentials = credentials
        await self._audit.record(
            "credentials.rotated",
            realm=state.realm,
            credential_version=credentials.version,
            reason=reason,
        )

    # -- generations and invalidations ------------------------------------------------

    def _see_generation(self, state: RealmState, generation: int) -> None:
        """A store generation above ours means an eviction we missed: forget our token.

        The epoch is left alone: the flight that noticed is reading the new state, it is
        not stale itself."""
        if generation > state.generation:
            state.generation = generation
            state.token = None

    def _adopt(self, state: RealmState, token: AccessToken, epoch: int) -> IssuedToken:
        if state.epoch != epoch:
            raise _Superseded
        self._remember(state, token)
        return IssuedToken(state.realm, token, TokenSource.REDIS)

    async def _evict_everywhere(self, state: RealmState, *, reason: str) -> None:
        state.drop_token()
        state.generation = max(
            state.generation, await self._store.evict(state.realm, reason=reason)
        )
        # Again: a flight that read the store before the eviction landed must not keep
        # or serve what it read.
        state.drop_token()

    async def _follow_invalidations(self) -> None:
        async for item in self._store.invalidations():
            if item is None:
                self._catching_up = asyncio.create_task(self._catch_up_until_done())
                continue
            state = self._realms.get(item.realm)
            if state is None or item.generation <= state.generation:
                continue
            state.generation = item.generation
            state.drop_token()
            if item.reason == "rotated":
                state.credentials = None  # re-read from Vault on the next fetch

    async def _catch_up_until_done(self) -> None:
        delay = 0.2
        while not await self._catch_up():
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _catch_up(self) -> bool:
        """After (re)subscribing: drop what was evicted meanwhile, and share again what the
        store lost (a restarted Redis) so other replicas need not call the IdP. Returns
        whether it got through."""
        for state in list(self._realms.values()):
            token = state.token
            if token is None:
                continue
            try:
                cached = await self._store.get(state.realm)
                if cached.generation > state.generation:
                    self._see_generation(state, cached.generation)
                    state.credentials = None
                    continue
                ttl = rules.cache_ttl(token, now=self._clock.now(), skew=self._t.expiry_skew)
                if cached.token is None and ttl > 0:
                    await self._store.put(
                        state.realm, token, ttl, generation=state.generation, only_if_absent=True
                    )
            except StoreUnavailable:
                return False
        return True

    # -- Vault version watch ----------------------------------------------------------

    async def _watch_versions(self) -> None:
        """Notice a new secret version in Vault and move to it without dropping the
        token in use: the successor is fetched with the new secret, then replaces it."""
        while True:
            await asyncio.sleep(self._t.vault_poll)
            for state in list(self._realms.values()):
                if state.credentials is None:
                    continue
                try:
                    version = await self._secrets.current_version(state.realm)
                    if version == state.credentials.version:
                        continue
                    fresh = await self._secrets.credentials(state.realm)
                except BrokerError as exc:
                    log.warning(
                        "vault version check failed",
                        extra={"realm": state.realm, "error": exc.slug},
                    )
                    continue
                await self._use_credentials(state, fresh, reason="vault-version")

                def from_new_secret(token: AccessToken, version: int = fresh.version) -> bool:
                    return token.credential_version >= version

                try:
                    await self._obtain(state.realm, from_new_secret)
                except BrokerError as exc:
                    log.warning(
                        "fetch with the new secret failed",
                        extra={"realm": state.realm, "error": exc.slug},
                    )

    # -- background refresh -----------------------------------------------------------

    def _remember(self, state: RealmState, token: AccessToken) -> None:
        current = state.token
        if (
            current is None
            or token.expires_at >= current.expires_at
            or (token.credential_version > current.credential_version)
        ):
            state.token = token
        refresher = self._refreshers.get(state.realm)
        if refresher is None or refresher.done():
            self._refreshers[state.realm] = asyncio.create_task(
                self._refresh_loop(state), name=f"refresh:{state.realm}"
            )

    def _refresh_due_at(self, token: AccessToken) -> float:
        return rules.refresh_at(
            token, skew=self._t.expiry_skew, refresh_before=self._t.refresh_before
        )

    async def _refresh_loop(self, state: RealmState) -> None:
        """Fetch each token's successor ahead of its expiry while the realm is in use."""
        retry = self._t.refresh_retry_min
        while True:
            token = state.token
            if token is None:
                return
            now = self._clock.now()
            due = self._refresh_due_at(token)
            if now < due:
                await asyncio.sleep(due - now)
                continue
            if state.last_used < now - token.lifetime():
                return  # idle for a whole lifetime: let the token lapse
            if rules.remaining(token, now=now, skew=self._t.expiry_skew) <= 0:
                state.drop_token()
                return

            def fresher(candidate: AccessToken) -> bool:
                return self._refresh_due_at(candidate) > self._clock.now()

            try:
                refreshed = await self._obtain(state.realm, fresher)
                retry = self._t.refresh_retry_min
                if not fresher(refreshed.token):
                    # Tokens too short-lived to refresh ahead: do not spin on the IdP.
                    await asyncio.sleep(retry)
            except BrokerError as exc:
                log.warning(
                    "background refresh failed", extra={"realm": state.realm, "error": exc.slug}
                )
                await asyncio.sleep(exc.retry_after or retry)
                retry = min(retry * 2, self._t.refresh_retry_max)

    # -- audit ------------------------------------------------------------------------

    async def _audit_denied(
        self, caller: str | None, realm: str, reason: str, ctx: RequestContext
    ) -> None:
        await self._audit.record(
            "token.denied", realm=realm, caller=caller, reason=reason, outcome="denied", ctx=ctx
        )
