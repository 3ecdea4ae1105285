"""Value objects shared by the core and its adapters."""

from __future__ import annotations

import hashlib
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

    def lifetime(self) -> float:
        return self.expires_at - self.issued_at

    def fingerprint(self) -> str:
        """The SHA-256 prefix the audit trail keeps instead of the token."""
        return token_fingerprint(self.value)


def token_fingerprint(value: str) -> str:
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
