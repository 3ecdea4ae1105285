"""`RealmDiscovery`: a realm's token endpoint, JWKS and issuer from its OpenID discovery
document, with Keycloak's paths when the IdP publishes none.

The document (`{realm base}/.well-known/openid-configuration`, OpenID Connect Discovery
1.0 §4) is cached per realm base and read again at most once per `refresh` seconds; a
read that fails keeps the last good copy (and is retried after `retry` seconds), a 404
means the IdP has no document and Keycloak's paths are used. Every URL, the document's
own and each it names, must pass `check` (the allowed IdP origins) before anything is
sent there: a document pointing elsewhere is refused, not followed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger(__name__)

DISCOVERY_SUFFIX = "/.well-known/openid-configuration"
KEYCLOAK_TOKEN_SUFFIX = "/protocol/openid-connect/token"
KEYCLOAK_CERTS_SUFFIX = "/protocol/openid-connect/certs"
# A 404 or 410 says the IdP has no document: Keycloak's paths, without retrying early.
_ABSENT_STATUSES = {404, 410}


@dataclass(frozen=True, slots=True)
class RealmEndpoints:
    """Where a realm's tokens come from, whose keys sign them, and the issuer they name."""

    token_endpoint: str
    jwks_uri: str
    issuer: str
    discovered: bool


def keycloak_endpoints(base: str) -> RealmEndpoints:
    """Keycloak's paths under a realm base (`…/auth/realms/{realm}` or `…/realms/{realm}`)."""
    return RealmEndpoints(
        token_endpoint=base + KEYCLOAK_TOKEN_SUFFIX,
        jwks_uri=base + KEYCLOAK_CERTS_SUFFIX,
        issuer=base,
        discovered=False,
    )


@dataclass(slots=True)
class _Entry:
    document: dict[str, Any] | None  # the last good copy; None when the IdP has none
    next_read: float  # monotonic


class RealmDiscovery:
    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        refresh: float = 3600.0,
        retry: float = 60.0,
        timeout: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        # Short: the document is small, and a fetch that waits on it still has the grant
        # (and perhaps the JWKS) to do within the time the other replicas wait for it.
        self._timeout = timeout
        self._refresh = refresh
        self._retry = retry
        self._monotonic = monotonic
        self._entries: dict[str, _Entry] = {}

    async def endpoints(self, base: str, check: Callable[[str], str]) -> RealmEndpoints:
        """The realm's endpoints; IdPOriginNotAllowed (from `check`) when the document's
        URL or one it names is outside the allowed origins."""
        base = base.rstrip("/")
        document = await self._document(base, check)
        fallback = keycloak_endpoints(base)
        if document is None:
            return fallback
        endpoints = RealmEndpoints(
            token_endpoint=_url(document, "token_endpoint") or fallback.token_endpoint,
            jwks_uri=_url(document, "jwks_uri") or fallback.jwks_uri,
            issuer=_url(document, "issuer") or fallback.issuer,
            discovered=True,
        )
        check(endpoints.token_endpoint)
        check(endpoints.jwks_uri)
        return endpoints

    async def _document(self, base: str, check: Callable[[str], str]) -> dict[str, Any] | None:
        entry = self._entries.get(base)
        now = self._monotonic()
        if entry is not None and now < entry.next_read:
            return entry.document
        url = check(base + DISCOVERY_SUFFIX)
        last_good = entry.document if entry is not None else None
        try:
            response = await self._client.get(
                url, headers={"Accept": "application/json"}, timeout=self._timeout
            )
        except httpx.HTTPError as exc:
            return self._failed(base, last_good, type(exc).__name__)
        if response.status_code in _ABSENT_STATUSES:
            self._entries[base] = _Entry(None, now + self._refresh)
            return None
        document = _json_object(response) if response.status_code == 200 else None
        if document is None:
            return self._failed(base, last_good, f"HTTP {response.status_code}")
        self._entries[base] = _Entry(document, now + self._refresh)
        return document

    def _failed(
        self, base: str, last_good: dict[str, Any] | None, why: str
    ) -> dict[str, Any] | None:
        log.warning(
            "IdP discovery document unreadable; keeping the last good copy",
            extra={"error": why, "has_copy": last_good is not None},
        )
        self._entries[base] = _Entry(last_good, self._monotonic() + self._retry)
        return last_good


def _url(document: dict[str, Any], member: str) -> str | None:
    value = document.get(member)
    # As published: an issuer is compared byte for byte, a trailing slash included.
    return value if isinstance(value, str) and value else None


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
