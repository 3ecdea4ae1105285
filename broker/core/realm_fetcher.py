"""`RealmFetcher`: one IdP request for a realm, with everything around it.

Before: the shared backoff must allow it, and the realm's credentials are loaded (read from
the secret source once, then kept: serving survives a Vault outage). During: when the IdP
calls the credentials wrong (`invalid_client`), the secret source is read again once and,
if the secret changed there, the request is repeated with the new one. After: a token
dying within the expiry skew is refused, the outcome feeds the backoff, and the fetch is
audited (`token.fetched` / `token.fetch_failed`).
"""

from __future__ import annotations

from collections.abc import Callable

from broker.core import rules
from broker.core.audit import AuditRecorder
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
    ) -> None:
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
        return token

    async def credentials_for(self, state: RealmState) -> RealmCredentials:
        if state.credentials is not None:
            return state.credentials
        credentials = await self._secrets.credentials(state.realm)
        state.credentials = credentials
        await self._audit.record(
            "credentials.loaded", realm=state.realm, credential_version=credentials.version
        )
        return credentials

    async def use_credentials(
        self, state: RealmState, credentials: RealmCredentials, *, reason: str
    ) -> None:
        """Move the realm to `credentials` (a rotated secret), audited."""
        state.credentials = credentials
        await self._audit.record(
            "credentials.rotated",
            realm=state.realm,
            credential_version=credentials.version,
            reason=reason,
        )

    async def _fetch_with(self, state: RealmState, credentials: RealmCredentials) -> AccessToken:
        try:
            return await self._issuer.fetch(credentials)
        except IdPRejected as exc:
            if exc.reason not in CREDENTIAL_ERRORS:
                raise
            try:
                fresh = await self._secrets.credentials(state.realm)
            except BrokerError:
                raise exc from None
            if fresh.version == credentials.version:
                raise
            await self.use_credentials(state, fresh, reason="idp-rejected")
            return await self._issuer.fetch(fresh)
