"""Value objects shared by the core and its adapters."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import SecretStr


@dataclass(frozen=True, slots=True)
class RealmCredentials:
    """A realm's client credentials as read from the secret source."""

    realm: str
    client_id: str
    client_secret: SecretStr
    version: int
    token_url: str | None = None
    scope: str | None = None
    api_url: str | None = None  # the realm's Atlas API base, overriding BROKER_API_URL
    # How the IdP's tokens are checked ("auto", "jwks", "none"), how the client
    # authenticates ("client_secret_basic", "client_secret_post"), and the `iss` its
    # tokens carry when it differs from the URL the broker reaches (a proxy).
    verify: str = "auto"
    auth_method: str = "client_secret_basic"
    issuer: str | None = None


@dataclass(frozen=True, slots=True)
class AccessToken:
    """An Atlas access token and the moment it dies.

    `expires_at` is already `min(exp, issued_at + expires_in)`; the raw value is kept
    out of `repr` so it cannot reach a log line by accident.
    """

    value: str = field(repr=False)
    expires_at: float
    issued_at: float
    scope: str | None = None
    credential_version: int = 0  # the version of the realm secret that obtained it

    def lifetime(self) -> float:
        return self.expires_at - self.issued_at

    def fingerprint(self) -> str:
        """The SHA-256 prefix the audit trail keeps instead of the token."""
        return token_fingerprint(self.value)


@functools.lru_cache(maxsize=256)
def token_fingerprint(value: str) -> str:
    # Cached: every issuance of a cached token records the same fingerprint.
    return hashlib.sha256(value.encode()).hexdigest()[:16]


class TokenSource(StrEnum):
    """Where a served token came from: the metric label and audit field `source`."""

    MEMORY = "memory"
    REDIS = "redis"
    IDP = "idp"


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """What a caller receives: the token, its realm and where it was found."""

    realm: str
    token: AccessToken
    source: TokenSource


@dataclass(frozen=True, slots=True)
class Cached:
    """What the shared store holds for a realm: a token (or none) and the realm's
    generation, which every eviction or rotation raises."""

    token: AccessToken | None
    generation: int


@dataclass(frozen=True, slots=True)
class Invalidation:
    """A realm's cached token was dropped (evicted or rotated) on some replica."""

    realm: str
    generation: int
    reason: str


@dataclass(frozen=True, slots=True)
class Backoff:
    """The shared "do not call the IdP before" of a failing realm."""

    failures: int
    next_attempt_at: float
    error: str


@dataclass(frozen=True, slots=True)
class RealmStatus:
    """A realm as this replica sees it, for `/v1/realms` and the rotate endpoint."""

    realm: str
    cached: bool
    expires_at: float | None
    last_refresh: float | None
    credential_version: int | None
    last_error: str | None
    verify: str | None = None  # the realm's verify mode, once its credentials were read
    # A newer secret version the IdP refused; the realm serves with `credential_version`.
    degraded: bool = False
    rejected_version: int | None = None


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """A request the forward proxy sends to the Atlas API. `body` is bytes when buffered
    (so it can be sent again), an async iterator of chunks when streamed, or None."""

    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes | AsyncIterator[bytes] | None = None


@dataclass(slots=True)
class ApiResponse:
    """The API's answer: status and headers read, the body still to be streamed
    (`body` yields raw chunks as received; `aclose` releases the connection)."""

    status: int
    headers: list[tuple[str, str]]
    body: AsyncIterator[bytes]
    aclose: Callable[[], Awaitable[None]]
