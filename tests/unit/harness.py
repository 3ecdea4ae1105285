"""One `TokenBroker` on the fakes of `fakes.py`, and the fakes to steer and inspect it.

Test modules of the core ask for the `make_harness` or `h` fixture (tests/unit/conftest.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from broker.adapters.memory_store import MemoryTokenStore
from broker.core.broker import BrokerTimings, TokenBroker
from broker.core.context import RequestContext
from broker.core.models import AccessToken
from fakes import FailingStore, FakeClock, FakeIssuer, FakeSecretSource, RecordingAuditSink

FAST = BrokerTimings(
    expiry_skew=30,
    refresh_before=300,
    lock_lease=15,
    peer_poll_min=0.001,
    peer_poll_max=0.005,
    peer_wait=30,
    refresh_retry_min=0.05,
    refresh_retry_max=0.2,
)
CTX = RequestContext(request_id="req-0001", client_ip="10.0.0.7")
ADMIN = "secops"
# The longest wait the IdP backoff imposes after a first failure (base 1 s, jitter <= 1).
BACKOFF_CEILING = 1.0


class Harness:
    """One broker on fakes, and the fakes to steer and inspect it."""

    def __init__(
        self,
        *,
        clock: FakeClock,
        timings: BrokerTimings,
        lifetime: float,
        secrets: FakeSecretSource | None = None,
        shared: MemoryTokenStore | None = None,
    ) -> None:
        self.clock = clock
        self.secrets = secrets or FakeSecretSource.with_realms("acme", "globex")
        self.issuer = FakeIssuer(clock, lifetime=lifetime)
        # What every replica sees; pass one harness's `shared` to another to make a peer.
        self.shared = shared or MemoryTokenStore(clock=clock)
        self.store = FailingStore(self.shared)
        self.audit = RecordingAuditSink()
        self.broker = TokenBroker(
            secrets=self.secrets,
            issuer=self.issuer,
            store=self.store,
            audit=self.audit,
            clock=clock,
            timings=timings,
        )

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def peer_token(self, value: str = "token-from-peer", *, lifetime: float = 3600) -> AccessToken:
        now = self.clock.now()
        return AccessToken(value=value, expires_at=now + lifetime, issued_at=now)


MakeHarness = Callable[..., Harness]


async def harnesses() -> AsyncIterator[MakeHarness]:
    """Builds harnesses and closes their brokers, so no background task outlives its test."""
    made: list[Harness] = []

    def make(
        *,
        clock: FakeClock | None = None,
        timings: BrokerTimings = FAST,
        lifetime: float = 3600,
        peer_of: Harness | None = None,
    ) -> Harness:
        harness = Harness(
            clock=clock or (peer_of.clock if peer_of else FakeClock()),
            timings=timings,
            lifetime=lifetime,
            secrets=peer_of.secrets if peer_of else None,
            shared=peer_of.shared if peer_of else None,
        )
        made.append(harness)
        return harness

    yield make
    for harness in made:
        await harness.broker.aclose()


def live_tasks(name: str) -> list[asyncio.Task[Any]]:
    return [task for task in asyncio.all_tasks() if task.get_name() == name and not task.done()]
