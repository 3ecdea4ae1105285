"""`PeerCoordinator`, through the broker on virtual time: one replica fetches under the
store's lock, the others wait for its token, and nobody waits forever."""

from __future__ import annotations

import asyncio

import pytest

from broker.adapters.memory_store import MemoryTokenStore
from broker.core.broker import BrokerTimings
from broker.core.errors import (
    IdPUnavailable,
)
from broker.core.models import AccessToken, TokenSource
from broker.core.peer_coordinator import PeerCoordinator, PeerTimings
from fakes import FakeClock, eventually
from harness import FAST, Harness, MakeHarness, live_tasks


async def test_locked_realm_waits_for_the_peers_token(h: Harness) -> None:
    """While another replica holds the realm's lock, the broker waits for its token."""
    await h.shared.acquire_lock("acme", "peer-replica", 15)
    request = asyncio.create_task(h.broker.token("acme"))
    await h.clock.run_until(lambda: h.store.calls["lock_held"] >= 1)  # polling the peer

    await h.shared.put("acme", h.peer_token(), 3000, generation=0)
    await h.shared.release_lock("acme", "peer-replica")
    await h.clock.run_until(request.done)
    issued = request.result()

    assert (TokenSource.REDIS, "token-from-peer", 0) == (
        issued.source,
        issued.token.value,
        h.issuer.fetches,
    )


async def test_locked_realm_does_not_fetch_while_the_peer_works(h: Harness) -> None:
    """Waiting on a peer's lock, the broker makes no IdP request, however long it polls."""
    await h.shared.acquire_lock("acme", "peer-replica", 15)
    request = asyncio.create_task(h.broker.token("acme"))

    await h.clock.run_until(lambda: h.store.calls["lock_held"] >= 5)

    assert (False, 0) == (request.done(), h.issuer.fetches)
    await h.shared.release_lock("acme", "peer-replica")
    await h.clock.run_until(request.done)


async def test_peer_leaving_without_a_token_makes_the_broker_fetch(h: Harness) -> None:
    """When the lock holder releases without storing a token, the broker fetches itself."""
    await h.shared.acquire_lock("acme", "peer-replica", 15)
    request = asyncio.create_task(h.broker.token("acme"))
    await h.clock.run_until(lambda: h.store.calls["lock_held"] >= 1)

    await h.shared.release_lock("acme", "peer-replica")
    await h.clock.run_until(request.done)
    issued = request.result()

    assert (TokenSource.IDP, 1) == (issued.source, h.issuer.fetches)


async def test_peer_dying_with_the_lock_is_taken_over_after_its_lease(h: Harness) -> None:
    """A lock holder that dies (its lease runs out) does not block the realm for good."""
    await h.shared.acquire_lock("acme", "dead-replica", 15)
    request = asyncio.create_task(h.broker.token("acme"))
    await h.clock.run_until(lambda: h.store.calls["lock_held"] >= 1)

    h.advance(16)
    await h.clock.run_until(request.done)
    issued = request.result()

    assert (TokenSource.IDP, 1) == (issued.source, h.issuer.fetches)


async def test_peer_too_slow_is_given_up_on_after_peer_wait(h: Harness) -> None:
    """A peer that keeps the lock past peer_wait without a token makes the broker fetch."""
    await h.shared.acquire_lock("acme", "stuck-replica", 3600)
    request = asyncio.create_task(h.broker.token("acme"))
    await h.clock.run_until(lambda: h.store.calls["lock_held"] >= 1)

    h.advance(FAST.peer_wait + 1)
    await h.clock.run_until(request.done)
    issued = request.result()

    assert (TokenSource.IDP, 1) == (issued.source, h.issuer.fetches)


async def test_fetch_releases_the_lock(h: Harness) -> None:
    """After its fetch the broker releases the realm's lock for the next fetch."""
    await h.broker.token("acme")

    assert not await h.shared.lock_held("acme")


async def test_failed_fetch_releases_the_lock(h: Harness) -> None:
    """A failed fetch releases the lock too, so peers need not wait out the lease."""
    h.issuer.fail_with = IdPUnavailable("down")
    with pytest.raises(IdPUnavailable):
        await h.broker.token("acme")

    assert not await h.shared.lock_held("acme")


async def test_peer_wait_deadline_passes_on_virtual_time(make_harness: MakeHarness) -> None:
    """Waiting for a stuck peer ends at peer_wait on the injected clock: virtual time alone
    brings the broker to fetch itself."""
    h = make_harness(timings=BrokerTimings(peer_poll_min=0.5, peer_poll_max=1.0, peer_wait=30))
    await h.shared.acquire_lock("acme", "stuck-replica", 3600)
    request = asyncio.create_task(h.broker.token("acme"))

    await h.clock.run_until(request.done, max_jumps=5000)

    assert (TokenSource.IDP, True) == (
        request.result().source,
        h.clock.monotonic() >= 30,
    )


async def test_lease_is_kept_alive_while_the_idp_is_slow(h: Harness) -> None:
    """The lock holder extends its lease while the IdP answers slowly, so no second replica
    takes the lock and fetches too."""
    gate = h.issuer.block()
    request = asyncio.create_task(h.broker.token("acme"))
    await eventually(lambda: h.issuer.fetches == 1)

    await h.clock.run_until(lambda: h.clock.monotonic() > 3 * FAST.lock_lease)

    assert (True, False) == (
        await h.shared.lock_held("acme"),
        await h.shared.acquire_lock("acme", "second-replica", FAST.lock_lease),
    )
    gate.set()
    await request


async def test_lease_keeper_stops_with_the_fetch(h: Harness) -> None:
    """Once the fetch is over the lease keeper is gone: nothing sleeps on the clock for it."""
    await h.broker.token("acme")

    assert [] == live_tasks("lease:acme")


# --- PeerCoordinator alone ----------------------------------------------------------------


def _coordinator(clock: FakeClock, store: MemoryTokenStore) -> PeerCoordinator:
    return PeerCoordinator(
        store, clock, PeerTimings(lease=15, poll_min=0.5, poll_max=1.0, peer_wait=30)
    )


async def test_free_lock_runs_the_work_under_it() -> None:
    """With the lock free the work runs while this replica holds the lock, released after."""
    clock = FakeClock()
    store = MemoryTokenStore(clock=clock)
    held_during_work: list[bool] = []

    async def locked() -> str:
        held_during_work.append(await store.lock_held("acme"))
        return "worked"

    async def alone(store_reachable: bool) -> str:
        return "alone"

    outcome = await _coordinator(clock, store).coordinate(
        "acme", lambda token: True, locked=locked, alone=alone, adopt=lambda token: "adopted"
    )

    assert ("worked", [True], False) == (outcome, held_during_work, await store.lock_held("acme"))


async def test_held_lock_adopts_the_holders_token() -> None:
    """With the lock held by a peer, the peer's stored token is adopted once it appears."""
    clock = FakeClock()
    store = MemoryTokenStore(clock=clock)
    await store.acquire_lock("acme", "peer", 15)

    async def never(*_: object) -> str:
        raise AssertionError("must not work while the peer does")

    waiting = asyncio.create_task(
        _coordinator(clock, store).coordinate(
            "acme", lambda token: True, locked=never, alone=never, adopt=lambda token: token.value
        )
    )
    await clock.run_until(lambda: clock.sleeping() == 1)
    now = clock.now()
    await store.put("acme", AccessToken("from-peer", now + 3600, now), 3000, generation=0)
    await clock.run_until(waiting.done)

    assert "from-peer" == waiting.result()
