"""Hand-written fakes of the core's ports, so unit tests run `TokenBroker` with no server.

Each fake does the least its port promises and records what the core asked of it, so
tests can state how often the IdP or the secret source was called.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from pydantic import SecretStr

from broker.adapters.memory_store import MemoryTokenStore
from broker.core.audit import AuditEvent
from broker.core.errors import (
    BrokerError,
    IdPRejected,
    RealmNotFound,
    SecretSourceUnavailable,
    StoreUnavailable,
)
from broker.core.models import AccessToken, RealmCredentials
from broker.core.ports import Clock

# 2027-01-15T08:00:00Z: far from any real "now", so a test leaning on the wall clock by
# mistake fails loudly instead of passing by coincidence.
EPOCH = 1_800_000_000.0


class FakeClock:
    """A clock that moves only when the test says so."""

    def __init__(self, now: float = EPOCH) -> None:
        self._now = now

    def now(self) -> float:
        return self._now

    def set(self, now: float) -> None:
        self._now = now

    def advance(self, seconds: float) -> None:
        self._now += seconds


def realm_credentials(realm: str, *, version: int = 1, **extra: str) -> RealmCredentials:
    """Credentials as the secret source would hold them for `realm` at `version`."""
    return RealmCredentials(
        realm=realm,
        client_id=f"atlas-{realm}",
        client_secret=SecretStr(f"s3cret-{realm}-v{version}"),
        version=version,
        token_url=extra.get("token_url"),
        scope=extra.get("scope"),
    )


class FakeSecretSource:
    """Realm credentials from a dict; counts reads; can be switched off like a dead Vault."""

    def __init__(self, realms: Mapping[str, RealmCredentials] | None = None) -> None:
        self.realms = dict(realms or {})
        self.reads = 0
        self.version_reads = 0
        self.unavailable = False

    @classmethod
    def with_realms(cls, *names: str) -> FakeSecretSource:
        return cls({name: realm_credentials(name) for name in names})

    async def credentials(self, realm: str) -> RealmCredentials:
        self.reads += 1
        return self._lookup(realm)

    async def current_version(self, realm: str) -> int:
        self.version_reads += 1
        return self._lookup(realm).version

    async def list_realms(self) -> list[str]:
        if self.unavailable:
            raise SecretSourceUnavailable("the fake secret source is switched off")
        return sorted(self.realms)

    def rotate(self, realm: str) -> RealmCredentials:
        """A new version of the realm's secret, as a security team's rotation writes it."""
        fresh = realm_credentials(realm, version=self.realms[realm].version + 1)
        self.realms[realm] = fresh
        return fresh

    def _lookup(self, realm: str) -> RealmCredentials:
        if self.unavailable:
            raise SecretSourceUnavailable("the fake secret source is switched off")
        try:
            return self.realms[realm]
        except KeyError:
            raise RealmNotFound(f"no credentials for realm {realm!r}") from None

    async def aclose(self) -> None:
        return None


class FakeIssuer:
    """An IdP that hands out opaque tokens living `lifetime` seconds on `clock`.

    `fetches` counts requests received (what a real IdP would see). `fail_with` makes every
    request raise; `refused_versions` answers invalid_client to those credential versions
    (a secret rotated at the IdP); `block()` holds every request until the returned event
    is set, so a test decides when a fetch completes.
    """

    def __init__(self, clock: Clock, *, lifetime: float = 3600.0) -> None:
        self._clock = clock
        self.lifetime = lifetime
        self.fetches = 0
        self.issued: list[AccessToken] = []
        self.fail_with: BrokerError | None = None
        self.refused_versions: set[int] = set()
        self.versions_seen: list[int] = []
        self._gate: asyncio.Event | None = None

    def block(self) -> asyncio.Event:
        self._gate = asyncio.Event()
        return self._gate

    async def fetch(self, credentials: RealmCredentials) -> AccessToken:
        self.fetches += 1
        self.versions_seen.append(credentials.version)
        if self._gate is not None:
            await self._gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        if credentials.version in self.refused_versions:
            raise IdPRejected("the IdP answered 'invalid_client'", reason="invalid_client")
        now = self._clock.now()
        token = AccessToken(
            value=f"token-{credentials.realm}-{len(self.issued) + 1}",
            expires_at=now + self.lifetime,
            issued_at=now,
            credential_version=credentials.version,
        )
        self.issued.append(token)
        return token

    async def aclose(self) -> None:
        return None


class FailingStore:
    """Any token store (normally a `MemoryTokenStore`) that fails like a dead Redis while
    `down` is true.

    Every method of the wrapped store is passed through, so the fake follows the
    `TokenStore` port as it grows. `calls` counts what the broker asked; a test playing
    another replica uses `inner` directly, so its own operations are not counted.
    """

    def __init__(self, inner: MemoryTokenStore) -> None:
        self.inner = inner
        self.down = False
        self.calls: Counter[str] = Counter()

    def _enter(self, method: str) -> None:
        self.calls[method] += 1
        if self.down:
            raise StoreUnavailable("redis: ConnectionError")

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if inspect.iscoroutinefunction(target):

            async def call(*args: Any, **kwargs: Any) -> Any:
                self._enter(name)
                return await target(*args, **kwargs)

            return call
        if inspect.isasyncgenfunction(target):

            async def stream(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                self._enter(name)
                async for item in target(*args, **kwargs):
                    yield item

            return stream
        return target


class RecordingAuditSink:
    """Keeps every event, in order."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def emit(self, event: AuditEvent) -> None:
        self.events.append(event)

    def named(self, name: str) -> list[AuditEvent]:
        return [event for event in self.events if event.event == name]

    async def aclose(self) -> None:
        return None


async def eventually(
    condition: Callable[[], bool], *, within: float = 2.0, poll: float = 0.0
) -> None:
    """Yield to the loop until `condition()` holds; fail after `within` real seconds.

    This waits for a state, not for time: it returns as soon as the state is reached.
    """
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {within} s")
        await asyncio.sleep(poll)
