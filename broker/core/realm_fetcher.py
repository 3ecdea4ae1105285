"""`RealmFetcher`: one IdP request for a realm, with everything around it.

Before: the shared backoff must allow it, and the realm's credentials are loaded (read from
the secret source once, then kept: serving survives a Vault outage). During: when the IdP
calls the credentials wrong (`invalid_client`), the secret source is read again once and,
if the secret changed there, the request is repeated with the new one. After: a token
dying within the expiry skew is refused, the outcome feeds the backoff, and the fetch is
audited (`token.fetched` / `token.fetch_failed`).

A scoped slot asks the IdP for its scope set instead of the realm's default scope.

A new secret version the IdP refuses cannot take the realm down: while the last version
that worked is still accepted, the fetch falls back to it, the realm is marked degraded
(`RealmState.rejected`, audited once per refused version as `credentials.rejected`) and
the new version is tried again first once its retry time comes (a capped exponential
schedule); the first fetch it passes makes it the realm's version and ends the degradation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from broker.core import rules
from broker.core.audit import AuditRecorder
from broker.core.backoff import backoff_delay
from broker.core.errors import BrokerError, IdPBadResponse, IdPRejected, UpstreamError
from broker.core.idp_backoff import IdPBackoff
from broker.core.models import AccessToken, RealmCredentials, TokenSource
from broker.core.ports import Clock, SecretSource, TokenIssuer
from broker.core.realm_state import RealmState

# OAuth2 errors that mean "these credentials are wrong": the secret may have been rotated.
CREDENTIAL_ERRORS = frozenset({"invalid_client", "unauthorized_client"})


class RealmFetcher:
    def __init__(
        self,
        *,
        secrets: SecretSource,
        issuer: TokenIssuer,
        backoff: IdPBackoff,
        audit: AuditRecorder,
        clock: Clock,
        expiry_skew: float,
        retry_base: float = 1.0,
        retry_max: float = 60.0,
    ) -> None:
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._secrets = secrets
        self._issuer = issuer
        self._backoff = backoff
        self._audit = audit
        self._clock = clock
        self._skew = expiry_skew

    async def fetch(
        self, state: RealmState, *, before_request: Callable[[], None] = lambda: None
    ) -> AccessToken:
        """A new token from the IdP. `before_request` runs once the credentials are in hand,
        just before the IdP is asked."""
        await self._backoff.check(state)
        credentials = await self.credentials_for(state)
        before_request()
        try:
            token = await self._fetch_with(state, credentials)
            if rules.cache_ttl(token, now=self._clock.now(), skew=self._skew) <= 0:
                raise IdPBadResponse("the IdP issued a token that expires within the skew")
        except UpstreamError as exc:
            code = await self._backoff.failed(state, exc)
            await self._audit.record(
                "token.fetch_failed",
                realm=state.key,
                reason=code,
                credential_version=credentials.version,
                outcome="failure",
            )
            raise
        await self._backoff.succeeded(state)
        await self._audit.record(
            "token.fetched",
            realm=state.key,
            source=TokenSource.IDP.value,
            token=token,
            credential_version=token.credential_version,
        )
        return token

    async def credentials_for(self, state: RealmState) -> RealmCredentials:
        if state.credentials is not None:
            return state.credentials
        credentials = await self._secrets.credentials(state.realm)
        state.credentials = credentials
        await self._audit.record(
            "credentials.loaded", realm=state.key, credential_version=credentials.version
        )
        return credentials

    async def use_credentials(
        self, state: RealmState, credentials: RealmCredentials, *, reason: str
    ) -> None:
        """Move the realm to `credentials` (a rotated secret), audited."""
        state.credentials = credentials
        await self._audit.record(
            "credentials.rotated",
            realm=state.key,
            credential_version=credentials.version,
            reason=reason,
        )

    async def _fetch_with(self, state: RealmState, credentials: RealmCredentials) -> AccessToken:
        rejected = state.rejected
        if rejected is not None and self._clock.now() >= state.rejected_retry_at:
            credentials = rejected  # a refused version's retry is due: it goes first
        elif rejected is not None and credentials.version == rejected.version and state.good:
            credentials = state.good  # re-read from Vault, but refused and not yet due
        try:
            return await self._accepted(state, credentials)
        except IdPRejected as exc:
            if exc.reason not in CREDENTIAL_ERRORS:
                raise
            refused, error = credentials, exc
        try:
            fresh = await self._secrets.credentials(state.realm)
        except BrokerError:
            fresh = refused
        if fresh.version != refused.version and fresh.version != state.good_version():
            await self.use_credentials(state, fresh, reason="idp-rejected")
            try:
                return await self._accepted(state, fresh)
            except IdPRejected as exc:
                if exc.reason not in CREDENTIAL_ERRORS:
                    raise
                refused, error = fresh, exc
        return await self._fall_back(state, refused, error)

    async def _accepted(self, state: RealmState, credentials: RealmCredentials) -> AccessToken:
        """A token obtained with `credentials`, which then become the realm's good ones."""
        token = await self._issuer.fetch(self._scoped(state, credentials))
        state.good = credentials
        state.credentials = credentials
        if state.rejected is not None and state.rejected.version <= credentials.version:
            state.rejected = None
            state.rejected_failures = 0
        return token

    async def _fall_back(
        self, state: RealmState, refused: RealmCredentials, error: IdPRejected
    ) -> AccessToken:
        """Fetch with the last version that worked when the IdP refused a newer one; the
        realm is then degraded until the newer one passes. Without such a version (or
        when it is refused as well) the realm fails as before."""
        good = state.good
        if good is None or good.version >= refused.version:
            raise error
        token = await self._issuer.fetch(self._scoped(state, good))
        state.credentials = good
        first = state.rejected is None or state.rejected.version != refused.version
        state.rejected_failures = 1 if first else state.rejected_failures + 1
        state.rejected = refused
        state.rejected_retry_at = self._clock.now() + backoff_delay(
            state.rejected_failures, base=self._retry_base, cap=self._retry_max
        )
        if first:
            await self._audit.record(
                "credentials.rejected",
                realm=state.key,
                credential_version=good.version,
                rejected_version=refused.version,
                reason=error.reason,
                outcome="failure",
            )
        return token

    @staticmethod
    def _scoped(state: RealmState, credentials: RealmCredentials) -> RealmCredentials:
        if not state.scopes:
            return credentials
        return dataclasses.replace(credentials, scope=rules.scope_label(state.scopes))
