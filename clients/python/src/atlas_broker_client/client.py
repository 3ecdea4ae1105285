"""`BrokerClient`: the broker's API as one caller sees it, for tools and admin scripts.

    with BrokerClient.from_env() as broker:
        token = broker.token("acme", min_ttl=120)
        for realm in broker.realms():
            print(realm.realm, realm.expires_at)
        broker.rotate("acme")                      # admin
        page = broker.audit(realm="acme", limit=20)  # auditor or admin

Every call is one HTTP request; nothing is cached (that is `BrokerAuth`'s job). Errors
are the same `BrokerClientError` tree `BrokerAuth` raises.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypedDict, Unpack

import httpx

from atlas_broker_client._credential import Credential, settings_from_env
from atlas_broker_client._wire import (
    BrokerToken,
    check_broker_url,
    check_realm,
    parse_json_response,
    parse_token_response,
    realm_url,
    request_headers,
    unreachable,
)
from atlas_broker_client.errors import BrokerConfigError, BrokerResponseError

DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class RealmInfo:
    """A realm the caller may use; the status fields are set for auditors and admins."""

    realm: str
    cached: bool | None = None
    expires_at: str | None = None  # RFC 3339 UTC
    last_refresh: str | None = None
    credential_version: int | None = None
    last_error: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> RealmInfo:
        def text(key: str) -> str | None:
            value = body.get(key)
            return str(value) if value is not None else None

        version = body.get("credential_version")
        cached = body.get("cached")
        return cls(
            realm=str(body.get("realm", "")),
            cached=cached if isinstance(cached, bool) else None,
            expires_at=text("expires_at"),
            last_refresh=text("last_refresh"),
            credential_version=version if isinstance(version, int) else None,
            last_error=text("last_error"),
            raw=dict(body),
        )


class AuditFilters(TypedDict, total=False):
    """`GET /v1/audit`'s filters; `since` (inclusive) and `until` (exclusive) are RFC 3339."""

    realm: str
    caller: str
    event: str
    since: str
    until: str


@dataclass(frozen=True, slots=True)
class AuditPage:
    """One page of `GET /v1/audit`, newest first; `next_cursor` is None on the last."""

    events: list[dict[str, Any]]
    next_cursor: str | None


class BrokerClient:
    """One caller's session with the broker (`api_key` or a workload `jwt_file`).

    `client` replaces the `httpx.Client` made here (for a proxy, TLS settings or a test
    transport); it stays the caller's to close. Use as a context manager, or `close()`.
    """

    def __init__(
        self,
        broker_url: str,
        *,
        api_key: str | None = None,
        jwt_file: str | os.PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        client: httpx.Client | None = None,
    ) -> None:
        if timeout <= 0:
            raise BrokerConfigError("timeout must be positive")
        self.broker_url = check_broker_url(broker_url)
        self._credential = Credential(api_key, jwt_file)
        self._owns_client = client is None
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(timeout), follow_redirects=False
        )

    @classmethod
    def from_env(
        cls, *, timeout: float = DEFAULT_TIMEOUT, environ: Mapping[str, str] | None = None
    ) -> BrokerClient:
        """Configured by `BROKER_URL` (default `http://127.0.0.1:8080`) and one of
        `BROKER_API_KEY` or `BROKER_JWT_FILE`."""
        url, api_key, jwt_file = settings_from_env(environ)
        return cls(url, api_key=api_key, jwt_file=jwt_file, timeout=timeout)

    def __repr__(self) -> str:
        return f"BrokerClient(broker_url={self.broker_url!r}, {self._credential.describe()})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    # -- the API ----------------------------------------------------------------------

    def token(self, realm: str, *, min_ttl: int | None = None) -> BrokerToken:
        """`GET /v1/realms/{realm}/token`: a token with at least `min_ttl` seconds left."""
        params = {"min_ttl": str(min_ttl)} if min_ttl is not None else {}
        credential = self._credential.read()
        response = self._send(
            "GET", realm_url(self.broker_url, check_realm(realm), "token"), credential, params
        )
        return parse_token_response(response, realm=realm, secret=credential)

    def realms(self) -> list[RealmInfo]:
        """`GET /v1/realms`: the realms the caller may use (with status for auditors)."""
        body = self._json("GET", f"{self.broker_url}/v1/realms")
        realms = body.get("realms") if body else None
        if not isinstance(realms, list):
            raise BrokerResponseError("the broker's answer has no realm list", status=200)
        return [RealmInfo.from_json(entry) for entry in realms if isinstance(entry, dict)]

    def rotate(self, realm: str) -> RealmInfo:
        """`POST /v1/realms/{realm}/rotate` (admin): re-read the credentials from Vault,
        drop the token on every replica, fetch a new one; the realm's status after."""
        body = self._json("POST", realm_url(self.broker_url, check_realm(realm), "rotate"))
        return RealmInfo.from_json(body or {"realm": realm})

    def evict(self, realm: str) -> None:
        """`DELETE /v1/realms/{realm}/token` (admin): drop the realm's token everywhere."""
        self._json("DELETE", realm_url(self.broker_url, check_realm(realm), "token"))

    def audit(
        self,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        **filters: Unpack[AuditFilters],
    ) -> AuditPage:
        """`GET /v1/audit` (auditor or admin): one page of events, newest first."""
        params: dict[str, str] = {name: str(value) for name, value in filters.items()}
        if limit is not None:
            params["limit"] = str(limit)
        if cursor is not None:
            params["cursor"] = cursor
        body = self._json("GET", f"{self.broker_url}/v1/audit", params) or {}
        events, next_cursor = body.get("events"), body.get("next_cursor")
        if not isinstance(events, list):
            raise BrokerResponseError("the broker's answer has no event list", status=200)
        return AuditPage(
            [e for e in events if isinstance(e, dict)],
            next_cursor if isinstance(next_cursor, str) and next_cursor else None,
        )

    def audit_events(
        self, *, wanted: int, page_size: int = 1000, **filters: Unpack[AuditFilters]
    ) -> Iterator[dict[str, Any]]:
        """Up to `wanted` events, newest first, following cursors across pages."""
        cursor: str | None = None
        given = 0
        while given < wanted:
            page = self.audit(limit=min(page_size, wanted - given), cursor=cursor, **filters)
            for event in page.events[: wanted - given]:
                given += 1
                yield event
            cursor = page.next_cursor
            if cursor is None:
                return

    # -- transport --------------------------------------------------------------------

    def _json(
        self, method: str, url: str, params: Mapping[str, str] | None = None
    ) -> dict[str, Any] | None:
        credential = self._credential.read()
        response = self._send(method, url, credential, params or {})
        return parse_json_response(response, secret=credential)

    def _send(
        self, method: str, url: str, credential: str, params: Mapping[str, str]
    ) -> httpx.Response:
        try:
            return self._client.request(
                method, url, params=params, headers=request_headers(credential), auth=None
            )
        except httpx.HTTPError as exc:
            raise unreachable(self.broker_url, exc) from exc
