"""`VersionWatcher`: notice a new secret version in the secret source (a rotation done in
Vault) and move the realm to it without dropping the token in use: the successor is
fetched with the new secret and only then replaces the old token. The watch is done when
the realm holds a token obtained with the new version, not merely after some fetch ended.
A version the IdP refused (the realm is degraded, see `realm_fetcher`) is asked for again
only when its retry is due.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from broker.core.errors import BrokerError
from broker.core.models import AccessToken, IssuedToken, RealmCredentials
from broker.core.ports import Clock, SecretSource
from broker.core.realm_fetcher import RealmFetcher
from broker.core.realm_state import RealmRegistry, RealmState
from broker.core.single_flight import Unsatisfied

log = logging.getLogger(__name__)

Obtain = Callable[[str, Callable[[AccessToken], bool]], Awaitable[IssuedToken]]


class VersionWatcher:
    def __init__(
        self,
        *,
        registry: RealmRegistry,
        secrets: SecretSource,
        fetcher: RealmFetcher,
        obtain: Obtain,
        clock: Clock,
        poll: float,
    ) -> None:
        self._registry = registry
        self._secrets = secrets
        self._fetcher = fetcher
        self._obtain = obtain
        self._clock = clock
        self._poll = poll

    async def watch(self) -> None:
        """Check every realm with loaded credentials each `poll` seconds, until cancelled."""
        while True:
            await self._clock.sleep(self._poll)
            for state in self._registry.all():
                await self.check(state)

    async def check(self, state: RealmState) -> None:
        """Move `state` to its secret's current version, if that changed."""
        loaded = state.credentials
        if loaded is None:
            return  # nothing loaded yet: the first fetch reads the current version
        fresh: RealmCredentials | None = None
        try:
            version = await self._secrets.current_version(state.realm)
            rejected = state.rejected
            if rejected is not None and version == rejected.version:
                # The IdP refused this version before: ask again on its retry schedule
                # (the fetch tries it first once due), not on every poll.
                if self._clock.now() < state.rejected_retry_at:
                    return
                target = rejected.version
            elif version == loaded.version:
                return
            else:
                fresh = await self._secrets.credentials(state.realm)
                target = fresh.version
        except BrokerError as exc:
            log.warning("vault version check failed", extra={"realm": state.key, "error": exc.slug})
            return
        if fresh is not None:
            await self._fetcher.use_credentials(state, fresh, reason="vault-version")

        def from_new_secret(token: AccessToken) -> bool:
            return token.credential_version >= target

        try:
            await self._obtain(state.key, from_new_secret)
        except (BrokerError, Unsatisfied) as exc:
            log.warning(
                "fetch with the new secret failed; serving with the last one that worked"
                if state.degraded
                else "fetch with the new secret failed",
                extra={"realm": state.key, "error": getattr(exc, "slug", "unsatisfied")},
            )
