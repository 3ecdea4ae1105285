"""The ports the core talks to. Adapters implement them; the core knows nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from broker.core.audit import AuditEvent
from broker.core.audit_query import AuditPage, AuditQuery
from broker.core.models import (
    AccessToken,
    ApiRequest,
    ApiResponse,
    Backoff,
    Cached,
    Invalidation,
    RealmCredentials,
)
from broker.core.policy import JwtIssuerSpec, RateLimit, WorkloadIdentity


class Clock(Protocol):
    """Time, read two ways: the wall (for `exp` and anything shared between replicas) and
    a monotonic reading (for deadlines and durations, immune to clock steps). The core
    sleeps through the clock too, so its tests run on virtual time."""

    def now(self) -> float:
        """Wall-clock seconds since the epoch (JWT `exp` is on this scale)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps; only differences mean anything."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the caller for `seconds` of monotonic time."""
        ...


class SecretSource(Protocol):
    async def credentials(self, realm: str) -> RealmCredentials:
        """The realm's credentials. Raises RealmNotFound or SecretSourceUnavailable."""
        ...

    async def current_version(self, realm: str) -> int:
        """The realm secret's current version (metadata only), to notice rotations."""
        ...

    async def list_realms(self) -> list[str]:
        """Names of the realms that have credentials. Raises SecretSourceUnavailable."""
        ...

    async def aclose(self) -> None: ...


class TokenIssuer(Protocol):
    async def fetch(self, credentials: RealmCredentials) -> AccessToken:
        """A fresh token from the realm's IdP. Raises IdPRejected, IdPBadResponse,
        IdPUnavailable."""
        ...

    async def aclose(self) -> None: ...


class TokenStore(Protocol):
    """Tokens shared between replicas, the lock that keeps their fetches single, and the
    signals that keep them consistent (generations, invalidations, a shared backoff).

    Every method may raise StoreUnavailable; the core then works on its own.
    """

    async def get(self, realm: str) -> Cached: ...

    async def put(
        self,
        realm: str,
        token: AccessToken,
        ttl: float,
        *,
        generation: int,
        only_if_absent: bool = False,
    ) -> bool:
        """Store `token` unless the realm's generation moved past `generation` (an eviction
        or rotation happened since the fetch began) or, with `only_if_absent`, a token or
        tombstone is there already. Returns whether it was stored."""
        ...

    async def evict(self, realm: str, *, reason: str) -> int:
        """Drop the realm's token, raise its generation, tell every replica; returns the
        new generation."""
        ...

    async def scoped_slots(self, realm: str) -> list[str]:
        """The scoped token slots (`rules.slot`) of `realm` any replica stored a token
        under, so an eviction or rotation of the realm reaches each of them."""
        ...

    def invalidations(self) -> AsyncIterator[Invalidation | None]:
        """Invalidations from every replica; `None` after a (re)subscription, when some
        may have been missed."""
        ...

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

    async def claim_forced_fetch(self, realm: str, interval: float) -> float:
        """Open the realm's forced-fetch window for `interval` seconds unless one is open
        (shared by every replica). Returns 0 when this call opened it, else the seconds
        until the open window closes."""
        ...

    async def get_backoff(self, realm: str) -> Backoff | None: ...

    async def set_backoff(self, realm: str, backoff: Backoff) -> None: ...

    async def clear_backoff(self, realm: str) -> None: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


class AuditSink(Protocol):
    async def emit(self, event: AuditEvent) -> None:
        """Record one event. Must not block the caller on slow I/O."""
        ...

    async def aclose(self) -> None: ...


class AuditTrail(Protocol):
    """The audit trail read back (`GET /v1/audit`), newest first."""

    async def query(self, query: AuditQuery) -> AuditPage:
        """One page of events. Raises StoreUnavailable when the trail cannot be read."""
        ...


class WorkloadVerifier(Protocol):
    async def identify(self, token: str, issuers: Sequence[JwtIssuerSpec]) -> WorkloadIdentity:
        """The issuer and `sub` of a workload JWT signed by one of `issuers`, for their
        audience. Raises Unauthenticated, or JwksUnavailable when the issuer's keys cannot
        be had."""
        ...


class RateLimiter(Protocol):
    async def acquire(self, caller: str, limit: RateLimit) -> float:
        """Count one request of `caller`: 0 when within `limit`, else the seconds until
        a request would be allowed again (the request is then not counted)."""
        ...


class ApiClient(Protocol):
    """The Atlas API, as the forward proxy calls it (pooled keep-alive connections)."""

    async def send(self, request: ApiRequest) -> ApiResponse:
        """Send `request`; the answer's body is left to stream. Raises ApiUnreachable or
        ApiTimeout (never a foreign exception)."""
        ...
