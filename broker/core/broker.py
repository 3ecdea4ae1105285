"""`TokenBroker`: hands out realm tokens, fetching each one once however many ask.

Read path, fastest first: the in-process cache, the shared store (Redis), the IdP.
Misses for one realm share one fetch: in-process through a shared task, across
replicas through the store's lock; the replicas that lose the lock wait for the winner's
token to appear in the store instead of calling the IdP themselves. A background
refresher per realm fetches the successor ahead of expiry, so in steady state no caller
waits on the IdP. When the store fails, the broker keeps working on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from broker.core import rules
from broker.core.audit import AuditEvent
from broker.core.context import RequestContext
from broker.core.errors import (
    BrokerError,
    Forbidden,
    IdPBadResponse,
    MinTtlUnsatisfiable,
    StoreUnavailable,
    UpstreamError,
)
from broker.core.models import AccessToken, IssuedToken, RealmCredentials, TokenSource
from broker.core.policy import Caller
from broker.core.ports import AuditSink, Clock, SecretSource, TokenIssuer, TokenStore

log = logging.getLogger(__name__)

Acceptable = Callable[[AccessToken], bool]


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
        self._audit = audit
        self._clock = clock
        self._t = timings or BrokerTimings()
        self._memory: dict[str, AccessToken] = {}
        self._credentials: dict[str, RealmCredentials] = {}
        self._flights: dict[str, asyncio.Task[IssuedToken]] = {}
        self._refreshers: dict[str, asyncio.Task[None]] = {}
        self._last_used: dict[str, float] = {}

    # -- public API -------------------------------------------------------------------

    async def issue(
        self, caller: Caller, realm: str, *, min_ttl: float, ctx: RequestContext
    ) -> IssuedToken:
        """A token for `realm` with at least `min_ttl` seconds left, if `caller` may have it.

        Authorization comes first, so a refused caller learns nothing about the realm.
        """
        if not caller.may_use(realm):
            await self._audit_denied(caller, realm, "realm-not-allowed", ctx)
            raise Forbidden(f"caller {caller.name!r} may not use realm {realm!r}")
        try:
            issued = await self.token(realm, min_ttl=min_ttl)
        except BrokerError as exc:
            await self._audit_denied(caller, realm, exc.slug, ctx)
            raise
        await self._audit.emit(
            AuditEvent(
                event="token.issued",
                time=self._clock.now(),
                outcome="success",
                caller=caller.name,
                realm=realm,
                source=issued.source.value,
                token_sha256=issued.token.fingerprint(),
                token_expires_at=issued.token.expires_at,
                request_id=ctx.request_id,
                client_ip=ctx.client_ip,
            )
        )
        return issued

    async def token(self, realm: str, *, min_ttl: float = 60.0) -> IssuedToken:
        """A token for `realm` with at least `min_ttl` seconds of validity left."""
        now = self._clock.now()
        self._last_used[realm] = now
        cached = self._memory.get(realm)
        if cached is not None and self._satisfies(cached, now, min_ttl):
            return IssuedToken(realm, cached, TokenSource.MEMORY)

        def enough(token: AccessToken) -> bool:
            return self._satisfies(token, self._clock.now(), min_ttl)

        for _ in range(2):
            issued = await self._obtain(realm, enough)
            if enough(issued.token):
                return issued
            if issued.source is TokenSource.IDP:
                raise MinTtlUnsatisfiable(
                    f"tokens of realm {realm!r} live {int(issued.token.lifetime())} s; "
                    f"min_ttl {int(min_ttl)} cannot be met"
                )
            # We joined a flight started for a laxer request: go round once more.
        raise MinTtlUnsatisfiable(f"no token of realm {realm!r} lives {int(min_ttl)} s")

    def now(self) -> float:
        return self._clock.now()

    def has_credentials(self) -> bool:
        """Whether any realm's credentials are loaded (serving survives a secret-store outage)."""
        return bool(self._credentials)

    async def aclose(self) -> None:
        """Stop background refreshes and in-flight fetches."""
        tasks = [*self._refreshers.values(), *self._flights.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._refreshers.clear()
        self._flights.clear()

    # -- single flight ----------------------------------------------------------------

    def _satisfies(self, token: AccessToken, now: float, min_ttl: float) -> bool:
        return rules.satisfies(token, now=now, skew=self._t.expiry_skew, min_ttl=min_ttl)

    async def _obtain(self, realm: str, acceptable: Acceptable) -> IssuedToken:
        """Join the realm's in-flight load, or start one."""
        flight = self._flights.get(realm)
        if flight is None:
            flight = asyncio.create_task(self._load(realm, acceptable), name=f"load:{realm}")
            self._flights[realm] = flight
            flight.add_done_callback(lambda done: self._end_flight(realm, done))
        # shield: a caller that disconnects must not cancel the fetch the others await.
        return await asyncio.shield(flight)

    def _end_flight(self, realm: str, done: asyncio.Task[IssuedToken]) -> None:
        if self._flights.get(realm) is done:
            del self._flights[realm]
        if not done.cancelled():
            done.exception()  # mark retrieved: waiters already got it

    async def _load(self, realm: str, acceptable: Acceptable) -> IssuedToken:
        try:
            shared = await self._store.get(realm)
        except StoreUnavailable as exc:
            log.warning(
                "token store unavailable, fetching alone", extra={"realm": realm, "error": str(exc)}
            )
            return await self._fetch(realm, share=False)
        if shared is not None and acceptable(shared):
            self._remember(realm, shared)
            return IssuedToken(realm, shared, TokenSource.REDIS)
        return await self._fetch_coordinated(realm, acceptable)

    async def _fetch_coordinated(self, realm: str, acceptable: Acceptable) -> IssuedToken:
        """Fetch under the store's lock, or wait for the replica that holds it."""
        owner = uuid.uuid4().hex
        deadline = self._clock.now() + self._t.peer_wait
        while True:
            try:
                locked = await self._store.acquire_lock(realm, owner, self._t.lock_lease)
            except StoreUnavailable:
                return await self._fetch(realm, share=False)
            if locked:
                try:
                    return await self._fetch_locked(realm, acceptable, owner)
                finally:
                    with contextlib.suppress(StoreUnavailable):
                        await self._store.release_lock(realm, owner)
            shared = await self._await_peer(realm, acceptable, deadline)
            if shared is not None:
                self._remember(realm, shared)
                return IssuedToken(realm, shared, TokenSource.REDIS)
            if self._clock.now() >= deadline:
                log.warning(
                    "peer fetch did not finish in time, fetching alone", extra={"realm": realm}
                )
                return await self._fetch(realm, share=True)

    async def _fetch_locked(self, realm: str, acceptable: Acceptable, owner: str) -> IssuedToken:
        # A peer may have stored a token between our miss and our lock.
        with contextlib.suppress(StoreUnavailable):
            shared = await self._store.get(realm)
            if shared is not None and acceptable(shared):
                self._remember(realm, shared)
                return IssuedToken(realm, shared, TokenSource.REDIS)
        keeper = asyncio.create_task(self._keep_lease(realm, owner), name=f"lease:{realm}")
        try:
            return await self._fetch(realm, share=True)
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
                shared = await self._store.get(realm)
                if shared is not None and acceptable(shared):
                    return shared
                if not await self._store.lock_held(realm):
                    # The holder stored nothing good and left; one last look, then compete.
                    shared = await self._store.get(realm)
                    return shared if shared is not None and acceptable(shared) else None
            except StoreUnavailable:
                return None
        return None

    # -- fetching ---------------------------------------------------------------------

    async def _fetch(self, realm: str, *, share: bool) -> IssuedToken:
        credentials = await self._credentials_for(realm)
        try:
            token = await self._issuer.fetch(credentials)
            if rules.cache_ttl(token, now=self._clock.now(), skew=self._t.expiry_skew) <= 0:
                raise IdPBadResponse("the IdP issued a token that expires within the skew")
        except UpstreamError as exc:
            await self._audit.emit(
                AuditEvent(
                    event="token.fetch_failed",
                    time=self._clock.now(),
                    outcome="failure",
                    realm=realm,
                    reason=getattr(exc, "reason", exc.slug),
                    credential_version=credentials.version,
                )
            )
            raise
        await self._audit.emit(
            AuditEvent(
                event="token.fetched",
                time=self._clock.now(),
                outcome="success",
                realm=realm,
                source=TokenSource.IDP.value,
                token_sha256=token.fingerprint(),
                token_expires_at=token.expires_at,
                credential_version=credentials.version,
            )
        )
        self._remember(realm, token)
        if share:
            ttl = rules.cache_ttl(token, now=self._clock.now(), skew=self._t.expiry_skew)
            try:
                await self._store.put(realm, token, ttl)
            except StoreUnavailable as exc:
                log.warning("could not share token", extra={"realm": realm, "error": str(exc)})
        return IssuedToken(realm, token, TokenSource.IDP)

    async def _credentials_for(self, realm: str) -> RealmCredentials:
        known = self._credentials.get(realm)
        if known is not None:
            return known
        credentials = await self._secrets.credentials(realm)
        self._credentials[realm] = credentials
        await self._audit.emit(
            AuditEvent(
                event="credentials.loaded",
                time=self._clock.now(),
                outcome="success",
                realm=realm,
                credential_version=credentials.version,
            )
        )
        return credentials

    # -- background refresh -----------------------------------------------------------

    def _remember(self, realm: str, token: AccessToken) -> None:
        current = self._memory.get(realm)
        if current is None or token.expires_at >= current.expires_at:
            self._memory[realm] = token
        refresher = self._refreshers.get(realm)
        if refresher is None or refresher.done():
            self._refreshers[realm] = asyncio.create_task(
                self._refresh_loop(realm), name=f"refresh:{realm}"
            )

    def _refresh_due_at(self, token: AccessToken) -> float:
        return rules.refresh_at(
            token, skew=self._t.expiry_skew, refresh_before=self._t.refresh_before
        )

    async def _refresh_loop(self, realm: str) -> None:
        """Fetch each token's successor ahead of its expiry while the realm is in use."""
        retry = self._t.refresh_retry_min
        while True:
            token = self._memory.get(realm)
            if token is None:
                return
            now = self._clock.now()
            due = self._refresh_due_at(token)
            if now < due:
                await asyncio.sleep(due - now)
                continue
            if self._last_used.get(realm, 0.0) < now - token.lifetime():
                return  # idle for a whole lifetime: let the token lapse
            if rules.remaining(token, now=now, skew=self._t.expiry_skew) <= 0:
                self._memory.pop(realm, None)
                return

            def fresher(candidate: AccessToken) -> bool:
                return self._refresh_due_at(candidate) > self._clock.now()

            try:
                refreshed = await self._obtain(realm, fresher)
                retry = self._t.refresh_retry_min
                if not fresher(refreshed.token):
                    # Tokens too short-lived to refresh ahead: do not spin on the IdP.
                    await asyncio.sleep(retry)
            except BrokerError as exc:
                log.warning("background refresh failed", extra={"realm": realm, "error": exc.slug})
                await asyncio.sleep(retry)
                retry = min(retry * 2, self._t.refresh_retry_max)

    async def _audit_denied(
        self, caller: Caller, realm: str, reason: str, ctx: RequestContext
    ) -> None:
        await self._audit.emit(
            AuditEvent(
                event="token.denied",
                time=self._clock.now(),
                outcome="denied",
                caller=caller.name,
                realm=realm,
                reason=reason,
                request_id=ctx.request_id,
                client_ip=ctx.client_ip,
            )
        )
