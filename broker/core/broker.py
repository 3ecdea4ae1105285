"""`TokenBroker`: hands out realm tokens, fetching each one once however many ask.

The facade over the core's parts; it holds no logic of theirs and they never call it:

    TokenBroker ── authorization; audit of issuance, eviction, rotation
     ├─ RealmRegistry         realm_state.py            what this replica knows per realm
     ├─ TokenSupply           token_supply.py           store, peer, IdP: one load per realm
     │   ├─ KeyedSingleFlight single_flight.py          one load, every waiter's own check
     │   ├─ PeerCoordinator   peer_coordinator.py       store lock, lease, waiting for a peer
     │   ├─ MinTtlGuard       min_ttl_guard.py          min_ttl cannot force IdP requests
     │   └─ RealmFetcher      realm_fetcher.py          credentials, IdP, backoff, fetch audit
     ├─ RealmAdministration   realm_admin.py            rotation and eviction, every replica
     ├─ RefreshScheduler      refresh_scheduler.py      the successor, ahead of expiry
     ├─ InvalidationFollower  invalidation_follower.py  other replicas' evictions
     └─ VersionWatcher        version_watcher.py        a secret rotated in Vault

Read path, fastest first: the in-process cache (here), then `TokenSupply`. Background
loops run under a `TaskSupervisor` (given by the application, or the broker's own).
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.core import rules
from broker.core.audit import AuditRecorder
from broker.core.context import RequestContext
from broker.core.errors import (
    BrokerError,
    Forbidden,
    IdPRejected,
    InvalidScope,
    RealmNotFound,
    ScopeNotAllowed,
)
from broker.core.idp_backoff import IdPBackoff
from broker.core.invalidation_follower import InvalidationFollower
from broker.core.min_ttl_guard import MinTtlGuard
from broker.core.models import AccessToken, IssuedToken, RealmStatus, TokenSource
from broker.core.peer_coordinator import PeerCoordinator, PeerTimings
from broker.core.policy import Caller
from broker.core.ports import AuditSink, Clock, SecretSource, TokenIssuer, TokenStore
from broker.core.realm_admin import RealmAdministration
from broker.core.realm_fetcher import RealmFetcher
from broker.core.realm_state import RealmRegistry
from broker.core.refresh_scheduler import RefreshScheduler, RefreshTimings
from broker.core.single_flight import Unsatisfied
from broker.core.supervisor import TaskSupervisor
from broker.core.token_supply import TokenSupply
from broker.core.version_watcher import VersionWatcher


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
    forced_fetch_interval: float = 10.0


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
        supervisor: TaskSupervisor | None = None,
    ) -> None:
        timings = timings or BrokerTimings()
        self._store = store
        self._secrets = secrets
        self._clock = clock
        self._skew = timings.expiry_skew
        self._vault_poll = timings.vault_poll
        self._audit = AuditRecorder(audit, clock)
        self._owns_supervisor = supervisor is None
        self._supervisor = supervisor or TaskSupervisor(clock)
        self._realms = RealmRegistry()
        self._backoff = IdPBackoff(
            store, clock, base=timings.idp_backoff_base, cap=timings.idp_backoff_max
        )
        self._fetcher = RealmFetcher(
            secrets=secrets,
            issuer=issuer,
            backoff=self._backoff,
            audit=self._audit,
            clock=clock,
            expiry_skew=timings.expiry_skew,
            retry_base=timings.idp_backoff_base,
            retry_max=timings.idp_backoff_max,
        )
        self._guard = MinTtlGuard(
            store,
            clock,
            interval=timings.forced_fetch_interval,
            expiry_skew=timings.expiry_skew,
            refresh_before=timings.refresh_before,
        )
        self._supply = TokenSupply(
            registry=self._realms,
            store=store,
            fetcher=self._fetcher,
            coordinator=PeerCoordinator(
                store,
                clock,
                PeerTimings(
                    lease=timings.lock_lease,
                    poll_min=timings.peer_poll_min,
                    poll_max=timings.peer_poll_max,
                    peer_wait=timings.peer_wait,
                ),
            ),
            guard=self._guard,
            clock=clock,
            expiry_skew=timings.expiry_skew,
        )
        self._admin = RealmAdministration(
            registry=self._realms,
            store=store,
            secrets=secrets,
            backoff=self._backoff,
            supply=self._supply,
            audit=self._audit,
        )
        self._refresher = RefreshScheduler(
            registry=self._realms,
            obtain=self._supply.obtain,
            clock=clock,
            supervisor=self._supervisor,
            timings=RefreshTimings(
                expiry_skew=timings.expiry_skew,
                refresh_before=timings.refresh_before,
                retry_min=timings.refresh_retry_min,
                retry_max=timings.refresh_retry_max,
            ),
        )

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Follow invalidations from other replicas and watch Vault for new versions."""
        follower = InvalidationFollower(
            registry=self._realms, store=self._store, clock=self._clock, expiry_skew=self._skew
        )
        watcher = VersionWatcher(
            registry=self._realms,
            secrets=self._secrets,
            fetcher=self._fetcher,
            obtain=self._supply.obtain,
            clock=self._clock,
            poll=self._vault_poll,
        )
        self._supervisor.start("invalidations", follower.follow)
        self._supervisor.start("vault-watch", watcher.watch)

    async def aclose(self) -> None:
        """Stop in-flight fetches first (so none keeps a token and wakes a refresher),
        then the background loops."""
        await self._supply.aclose()
        for name in (
            "invalidations",
            "vault-watch",
            *map(RefreshScheduler.task_name, self._realms.names()),
        ):
            await self._supervisor.stop(name)
        if self._owns_supervisor:
            await self._supervisor.aclose()

    # -- public API -------------------------------------------------------------------

    def now(self) -> float:
        return self._clock.now()

    def has_credentials(self) -> bool:
        """Whether any realm's credentials are loaded (serving survives a Vault outage)."""
        return any(state.credentials is not None for state in self._realms.all())

    async def issue(
        self,
        caller: Caller,
        realm: str,
        *,
        min_ttl: float,
        ctx: RequestContext,
        scopes: tuple[str, ...] = (),
    ) -> IssuedToken:
        """A token for `realm` with at least `min_ttl` seconds left, if `caller` may have it;
        with `scopes` (normalised, `rules.parse_scopes`), one carrying just that scope set.

        Authorization comes first, so a refused caller learns nothing about the realm.
        """
        slot = rules.slot(realm, scopes)
        if not caller.may_use(realm):
            await self._audit_denied(caller.name, slot, "realm-not-allowed", ctx)
            raise Forbidden(f"caller {caller.name!r} may not use realm {realm!r}")
        if not caller.may_ask(scopes):
            await self._audit_denied(caller.name, slot, "scope-not-allowed", ctx)
            raise ScopeNotAllowed(
                f"caller {caller.name!r} may not ask for scope {rules.scope_label(scopes)!r}"
            )
        try:
            issued = await self.token(realm, min_ttl=min_ttl, scopes=scopes)
        except BrokerError as exc:
            await self._audit_denied(caller.name, slot, exc.slug, ctx)
            raise
        await self._audit.record(
            "token.issued",
            realm=slot,
            caller=caller.name,
            source=issued.source.value,
            token=issued.token,
            ctx=ctx,
        )
        return issued

    async def token(
        self, realm: str, *, min_ttl: float = 60.0, scopes: tuple[str, ...] = ()
    ) -> IssuedToken:
        """A token for `realm` (and the scope set `scopes`, else the realm's default
        scope) with at least `min_ttl` seconds of validity left."""
        slot = rules.slot(realm, scopes)
        state = self._realms.state(slot)
        state.last_used = self._clock.monotonic()
        cached = state.token
        if cached is not None and self._satisfies(cached, min_ttl):
            return IssuedToken(realm, cached, TokenSource.MEMORY)

        self._guard.check_reach(state, min_ttl)

        def enough(token: AccessToken) -> bool:
            return self._satisfies(token, min_ttl)

        try:
            return await self._supply.obtain(slot, enough)
        except RealmNotFound:
            # Forget names that are no realm, so guesses do not accumulate as state.
            if state.token is None and state.credentials is None:
                self._realms.forget(slot)
            raise
        except Unsatisfied as exc:
            raise self._guard.refusal(state, min_ttl, exc.value) from None
        except IdPRejected as exc:
            if exc.reason != "invalid_scope" or not scopes:
                raise
            raise InvalidScope(
                f"the identity provider refused scope {rules.scope_label(scopes)!r} "
                f"for realm {realm!r} (invalid_scope)",
                retry_after=exc.retry_after,
            ) from None

    async def rotate(self, realm: str, *, actor: str, ctx: RequestContext) -> RealmStatus:
        """Re-read the realm's credentials, drop its tokens on every replica, fetch anew;
        the realm's status after it."""
        await self._admin.rotate(realm, actor=actor, ctx=ctx)
        return self.realm_status(realm)

    async def evict(self, realm: str, *, actor: str, ctx: RequestContext) -> None:
        """Drop the realm's cached tokens on every replica (a suspected leak)."""
        await self._admin.evict(realm, actor=actor, ctx=ctx)

    def realm_status(self, realm: str) -> RealmStatus:
        return self._realms.status(realm, now=self._clock.now(), skew=self._skew)

    def realm_statuses(self) -> dict[str, RealmStatus]:
        realms = sorted({state.realm for state in self._realms.all()})
        return {realm: self.realm_status(realm) for realm in realms}

    # -- helpers ----------------------------------------------------------------------

    def _satisfies(self, token: AccessToken, min_ttl: float) -> bool:
        return rules.satisfies(token, now=self._clock.now(), skew=self._skew, min_ttl=min_ttl)

    async def _audit_denied(
        self, caller: str | None, realm: str, reason: str, ctx: RequestContext
    ) -> None:
        await self._audit.record(
            "token.denied", realm=realm, caller=caller, reason=reason, outcome="denied", ctx=ctx
        )
