"""Operations an admin runs on a realm: rotation and eviction, on every replica.

Both act on every slot of the realm (the default token and each scope set's), including
scope sets only another replica served, which the shared store lists.
"""

from __future__ import annotations

import contextlib

from broker.core.audit import AuditRecorder
from broker.core.context import RequestContext
from broker.core.errors import BrokerError, RealmUnsettled, StoreUnavailable
from broker.core.idp_backoff import IdPBackoff
from broker.core.ports import SecretSource, TokenStore
from broker.core.realm_state import RealmRegistry, RealmState
from broker.core.token_supply import TokenSupply


class RealmAdministration:
    def __init__(
        self,
        *,
        registry: RealmRegistry,
        store: TokenStore,
        secrets: SecretSource,
        backoff: IdPBackoff,
        supply: TokenSupply,
        audit: AuditRecorder,
    ) -> None:
        self._realms = registry
        self._store = store
        self._secrets = secrets
        self._backoff = backoff
        self._supply = supply
        self._audit = audit

    async def rotate(self, realm: str, *, actor: str, ctx: RequestContext) -> None:
        """Re-read the realm's credentials, drop its tokens (every scope set) on every
        replica, fetch anew. When the IdP refuses the new secret the realm keeps serving
        with the last one that worked, degraded (see `realm_fetcher`)."""
        credentials = await self._secrets.credentials(realm)
        for slot_state in await self._slots(realm):
            slot_state.credentials = credentials
            slot_state.rejected_retry_at = 0.0  # a refused version is tried again now
            await self._evict_everywhere(slot_state, reason="rotated")
            await self._backoff.clear(slot_state)
        await self._audit.record(
            "credentials.rotated",
            realm=realm,
            caller=actor,
            credential_version=credentials.version,
            reason="requested",
            ctx=ctx,
        )
        # Rotations or evictions that come after this one may supersede its fetch: its own
        # part (re-read, evict everywhere) is done, and the newest one fetches.
        with contextlib.suppress(RealmUnsettled):
            await self._supply.obtain(realm, lambda token: True)

    async def evict(self, realm: str, *, actor: str, ctx: RequestContext) -> None:
        """Drop the realm's cached token on every replica (a suspected leak). When the store
        cannot be reached the eviction is audited as a failure and the error raised: other
        replicas may still serve the token."""
        state = self._realms.state(realm)
        evicted = state.token
        try:
            for slot_state in await self._slots(realm):
                await self._evict_everywhere(slot_state, reason="evicted")
        except BrokerError as exc:
            await self._audit.record(
                "token.evicted",
                realm=realm,
                caller=actor,
                token=evicted,
                reason=exc.slug,
                outcome="failure",
                ctx=ctx,
            )
            raise
        await self._audit.record("token.evicted", realm=realm, caller=actor, token=evicted, ctx=ctx)

    async def _slots(self, realm: str) -> list[RealmState]:
        """The realm's default slot and every scoped one, here or in the shared store (a
        scope set only another replica served). With the store out of reach, the slots
        known here (the eviction then fails on the store, after dropping them here)."""
        default = self._realms.state(realm)
        names = {s.key for s in self._realms.of_realm(realm)}
        with contextlib.suppress(StoreUnavailable):
            names.update(await self._store.scoped_slots(realm))
        names.discard(realm)
        return [default, *(self._realms.state(name) for name in sorted(names))]

    async def _evict_everywhere(self, state: RealmState, *, reason: str) -> None:
        state.drop_token()
        generation = await self._store.evict(state.key, reason=reason)
        state.shared_generation = max(state.shared_generation, generation)
        # Again: a load that read the store before the eviction landed must not keep or
        # serve what it read.
        state.drop_token()
