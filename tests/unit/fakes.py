"""Hand-written fakes of the core's ports, so unit tests run `TokenBroker` with no server.

Each fake does the least its port promises and records what the core asked of it, so
tests can state how often the IdP or the secret source was called.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from pydantic import SecretStr

import polling
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
    """Virtual time: a wall reading (for `exp`) and a monotonic reading (for deadlines and
    sleeps) that move only when the test says so.

    `sleep()` parks the caller until `advance()` (or `run_until()`) moves the monotonic
    reading past its wake-up time, so refresh, lease and peer-wait tests take no real time
    and always see the same order of events.
    """

    def __init__(self, now: float = EPOCH) -> None:
        self._wall = now
        self._monotonic = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._sequence = 0

    def now(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._monotonic

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        wake = asyncio.get_running_loop().create_future()
        self._sequence += 1
        heapq.heappush(self._sleepers, (self._monotonic + seconds, self._sequence, wake))
        await wake

    def set(self, now: float) -> None:
        """Set the wall reading only (a wall clock stepped by NTP); sleepers stay asleep."""
        self._wall = now

    def advance(self, seconds: float) -> None:
        """Move both readings forward and wake every sleeper that is due."""
        self._wall += seconds
        self._monotonic += seconds
        while self._sleepers and self._sleepers[0][0] <= self._monotonic:
            _, _, wake = heapq.heappop(self._sleepers)
            if not wake.done():
                wake.set_result(None)

    def sleeping(self) -> int:
        """How many tasks are asleep on this clock."""
        return sum(1 for _, _, wake in self._sleepers if not wake.done())

    async def run_until(
        self, condition: Callable[[], bool], *, within: float = 2.0, max_jumps: int = 100_000
    ) -> None:
        """Let the loop run; whenever it has nothing left to do before the next wake-up,
        jump virtual time to that wake-up. Fails when `condition()` does not hold after
        `within` real seconds or `max_jumps` jumps."""
        deadline = time.monotonic() + within
        for _ in range(max_jumps):
            for _ in range(_SETTLE_TURNS):
                if condition():
                    return
                await asyncio.sleep(0)
            if time.monotonic() > deadline:
                break
            pending = [when for when, _, wake in self._sleepers if not wake.done()]
            if pending:
                self.advance(max(0.0, min(pending) - self._monotonic))
        if not condition():
            raise AssertionError(f"condition not reached (virtual time {self._monotonic} s)")


# Loop turns given to the tasks before virtual time jumps: the fakes answer without real
# I/O, so a few turns let every woken task reach its next sleep.
_SETTLE_TURNS = 20


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
        # The scope each request asked for, and scopes answered with invalid_scope.
        self.scopes_seen: list[str | None] = []
        self.unknown_scopes: set[str] = set()
        # Lifetimes of the next tokens, used before `lifetime` (an IdP that once answers a
        # shorter token, as Keycloak does when a client session nears its maximum).
        self.upcoming_lifetimes: list[float] = []
        # Awaited after each request reached the IdP (a test acting in the middle of a fetch).
        self.after_fetch: Callable[[], Awaitable[None]] | None = None
        self._gate: asyncio.Event | None = None

    def block(self) -> asyncio.Event:
        self._gate = asyncio.Event()
        return self._gate

    async def fetch(self, credentials: RealmCredentials) -> AccessToken:
        self.fetches += 1
        self.versions_seen.append(credentials.version)
        self.scopes_seen.append(credentials.scope)
        if self._gate is not None:
            await self._gate.wait()
        if self.after_fetch is not None:
            await self.after_fetch()
        if self.fail_with is not None:
            raise self.fail_with
        if credentials.version in self.refused_versions:
            raise IdPRejected("the IdP answered 'invalid_client'", reason="invalid_client")
        if self.unknown_scopes.intersection((credentials.scope or "").split()):
            raise IdPRejected("the IdP answered 'invalid_scope'", reason="invalid_scope")
        now = self._clock.now()
        lifetime = self.upcoming_lifetimes.pop(0) if self.upcoming_lifetimes else self.lifetime
        token = AccessToken(
            value=f"token-{credentials.realm}-{len(self.issued) + 1}",
            expires_at=now + lifetime,
            issued_at=now,
            scope=credentials.scope,
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
    await polling.eventually(condition, timeout=within, interval=poll)
