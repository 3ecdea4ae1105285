"""The ports the core talks to. Adapters implement them; the core knows nothing else."""

from __future__ import annotations

from typing import Protocol

from broker.core.audit import AuditEvent
from broker.core.models import AccessToken, RealmCredentials


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch (JWT `exp` is on this scale)."""
        ...


class SecretSource(Protocol):
    async def credentials(self, realm: str) -> RealmCredentials:
        """The realm's credentials. Raises RealmNotFound or SecretSourceUnavailable."""
        ...

    async def aclose(self) -> None: ...


class TokenIssuer(Protocol):
    async def fetch(self, credentials: RealmCredentials) -> AccessToken:
        """A fresh token from the realm's IdP. Raises IdPRejected, IdPBadResponse,
        IdPUnavailable."""
        ...

    async def aclose(self) -> None: ...


class TokenStore(Protocol):
    """Tokens shared between replicas, and the lock that keeps their fetches single.

    Every method may raise StoreUnavailable; the core then works on its own.
    """

    async def get(self, realm: str) -> AccessToken | None: ...

    async def put(self, realm: str, token: AccessToken, ttl: float) -> None: ...

    async def acquire_lock(self, realm: str, owner: str, lease: float) -> bool:
        """Take the realm's fetch lock unless another owner holds it."""
        ...

    async def extend_lock(self, realm: str, owner: str, lease: float) -> bool:
        """Extend the lease if `owner` still holds it."""
        ...

    async def release_lock(self, realm: str, owner: str) -> None:
        """Delete the lock only if `owner` still holds it (compare-and-delete)."""
        ...

    async def lock_held(self, realm: str) -> bool: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


class AuditSink(Protocol):
    async def emit(self, event: AuditEvent) -> None:
        """Record one event. Must not block the caller on slow I/O."""
        ...

    async def aclose(self) -> None: ...
