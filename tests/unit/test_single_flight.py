"""`KeyedSingleFlight`: concurrent requests share one load, and each waiter's own
predicate is checked against the result (alone, and through the broker)."""

from __future__ import annotations

import asyncio

import pytest

from broker.core.errors import (
    IdPUnavailable,
)
from broker.core.single_flight import (
    Demand,
    KeyedSingleFlight,
    Superseded,
    SupersededTooOften,
    Unsatisfied,
)
from fakes import eventually
from harness import ADMIN, CTX, Harness


async def test_concurrent_misses_share_one_fetch(h: Harness) -> None:
    """200 concurrent requests on a cold cache make exactly one IdP request."""
    gate = h.issuer.block()
    entered = 0

    async def ask() -> str:
        nonlocal entered
        entered += 1
        return (await h.broker.token("acme")).token.value

    callers = [asyncio.create_task(ask()) for _ in range(200)]
    await eventually(lambda: entered == 200 and h.issuer.fetches == 1)
    assert not any(task.done() for task in callers)  # all 200 are waiting on the fetch
    gate.set()
    values = await asyncio.gather(*callers)

    assert ({"token-acme-1"}, 1) == (set(values), h.issuer.fetches)


async def test_concurrent_misses_share_one_failure(h: Harness) -> None:
    """When the one shared fetch fails, every waiter gets its error and the IdP saw one call."""
    gate = h.issuer.block()
    h.issuer.fail_with = IdPUnavailable("the identity provider answered HTTP 503")
    callers = [asyncio.create_task(h.broker.token("acme")) for _ in range(20)]
    await eventually(lambda: h.issuer.fetches == 1)
    gate.set()

    outcomes = await asyncio.gather(*callers, return_exceptions=True)

    assert ({IdPUnavailable}, 1) == ({type(o) for o in outcomes}, h.issuer.fetches)


async def test_cancelled_caller_does_not_cancel_the_shared_fetch(h: Harness) -> None:
    """A caller that goes away mid-fetch leaves the fetch running for the others."""
    gate = h.issuer.block()
    starter = asyncio.create_task(h.broker.token("acme"))
    other = asyncio.create_task(h.broker.token("acme"))
    await eventually(lambda: h.issuer.fetches == 1)

    starter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starter
    gate.set()
    issued = await other

    assert ("token-acme-1", 1) == (issued.token.value, h.issuer.fetches)


async def test_fetch_abandoned_by_its_only_caller_still_fills_the_cache(h: Harness) -> None:
    """A fetch whose only caller went away completes, and the next caller gets its token."""
    gate = h.issuer.block()
    starter = asyncio.create_task(h.broker.token("acme"))
    await eventually(lambda: h.issuer.fetches == 1)
    starter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starter

    gate.set()
    issued = await h.broker.token("acme")

    assert ("token-acme-1", 1) == (issued.token.value, h.issuer.fetches)


async def test_fetch_in_flight_during_an_eviction_is_not_served(h: Harness) -> None:
    """A token whose fetch began before an eviction is discarded; callers get a newer one."""
    gate = h.issuer.block()
    request = asyncio.create_task(h.broker.token("acme"))
    await eventually(lambda: h.issuer.fetches == 1)

    await h.broker.evict("acme", actor=ADMIN, ctx=CTX)
    gate.set()
    issued = await request

    assert ("token-acme-2", 2) == (issued.token.value, h.issuer.fetches)


async def test_fetch_superseded_by_an_eviction_starts_over_without_stalling(h: Harness) -> None:
    """Callers waiting on a fetch that an eviction superseded get the next fetch's token,
    and the event loop keeps running meanwhile (a finished flight is never re-awaited)."""
    gate = h.issuer.block()
    waiters = [asyncio.create_task(h.broker.token("acme")) for _ in range(5)]
    await eventually(lambda: h.issuer.fetches == 1)
    await h.broker.evict("acme", actor=ADMIN, ctx=CTX)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    gate.set()
    issued = await asyncio.wait_for(asyncio.gather(*waiters), timeout=5)
    ticker.cancel()

    assert 2 == h.issuer.fetches
    assert {h.issuer.issued[1].value} == {i.token.value for i in issued}
    assert ticks > 0


async def test_stricter_waiter_on_a_laxer_flight_gets_a_token_long_enough(h: Harness) -> None:
    """A min_ttl=600 request joining a flight whose IdP answer is too short for it (but not
    for the request that started it) is served by a further fetch, not refused with 422."""
    h.issuer.upcoming_lifetimes = [300]  # then the realm's usual 3600 s
    gate = h.issuer.block()
    lax = asyncio.create_task(h.broker.token("acme", min_ttl=0))
    await eventually(lambda: h.issuer.fetches == 1)
    strict = asyncio.create_task(h.broker.token("acme", min_ttl=600))
    await h.clock.run_until(lambda: h.issuer.fetches == 1 and h.clock.sleeping() == 0)
    gate.set()

    served = await asyncio.gather(lax, strict)

    assert ("token-acme-1", "token-acme-2") == tuple(s.token.value for s in served)


# --- KeyedSingleFlight alone ------------------------------------------------------------


class Loads:
    """A load function that counts its runs and answers what the test queues."""

    def __init__(self, *values: int) -> None:
        self.values = list(values)
        self.runs = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, demand: Demand[int]) -> int:
        self.runs += 1
        demand.commit()  # like an IdP request: whatever comes back is final for those present
        await self.gate.wait()
        return self.values.pop(0)


async def test_waiters_of_one_key_share_one_load() -> None:
    """Concurrent waiters on one key get the value of a single load."""
    flights: KeyedSingleFlight[str, int] = KeyedSingleFlight(name="t")
    loads = Loads(7)
    loads.gate.clear()
    waiters = [asyncio.create_task(flights.run("k", loads, lambda v: True)) for _ in range(10)]
    await eventually(lambda: loads.runs == 1)
    loads.gate.set()

    assert ([7] * 10, 1) == (await asyncio.gather(*waiters), loads.runs)


async def test_waiter_refusing_a_value_it_did_not_commit_to_starts_another_load() -> None:
    """A waiter that joined after the load committed, and refuses its value, gets the next
    load's value instead."""
    flights: KeyedSingleFlight[str, int] = KeyedSingleFlight(name="t")
    loads = Loads(1, 5)
    loads.gate.clear()
    lax = asyncio.create_task(flights.run("k", loads, lambda v: True))
    await eventually(lambda: loads.runs == 1)
    strict = asyncio.create_task(flights.run("k", loads, lambda v: v >= 5))
    await asyncio.sleep(0)
    loads.gate.set()

    assert ([1, 5], 2) == (list(await asyncio.gather(lax, strict)), loads.runs)


async def test_waiter_refusing_a_value_committed_for_it_is_unsatisfied() -> None:
    """A waiter present when the load committed, refusing its value, gets Unsatisfied
    carrying that value, without another load."""
    flights: KeyedSingleFlight[str, int] = KeyedSingleFlight(name="t")
    loads = Loads(1, 5)

    with pytest.raises(Unsatisfied) as caught:
        await flights.run("k", loads, lambda v: v >= 5)

    assert (1, 1) == (caught.value.value, loads.runs)


async def test_load_sees_every_waiters_demand() -> None:
    """The load's `Demand.accepts` holds only for a value every current waiter accepts."""
    flights: KeyedSingleFlight[str, int] = KeyedSingleFlight(name="t")
    seen: list[tuple[bool, bool]] = []
    gate = asyncio.Event()

    async def load(demand: Demand[int]) -> int:
        await gate.wait()
        seen.append((demand.accepts(3), demand.accepts(9)))
        return 9

    first = asyncio.create_task(flights.run("k", load, lambda v: v >= 1))
    second = asyncio.create_task(flights.run("k", load, lambda v: v >= 5))
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(first, second)

    assert [(False, True)] == seen


async def test_superseded_loads_are_retried_a_bounded_number_of_times() -> None:
    """A load superseded every time ends in SupersededTooOften after `supersessions` runs."""
    flights: KeyedSingleFlight[str, int] = KeyedSingleFlight(name="t", supersessions=3)
    runs = 0

    async def stale(demand: Demand[int]) -> int:
        nonlocal runs
        runs += 1
        raise Superseded

    with pytest.raises(SupersededTooOften):
        await flights.run("k", stale, lambda v: True)

    assert 3 == runs


async def test_aclose_cancels_running_loads() -> None:
    """aclose() cancels every running load and waits for it; its waiters see the cancellation."""
    flights: KeyedSingleFlight[str, int] = KeyedSingleFlight(name="t")
    loads = Loads(1)
    loads.gate.clear()
    waiter = asyncio.create_task(flights.run("k", loads, lambda v: True))
    await eventually(lambda: loads.runs == 1)

    await flights.aclose()

    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not flights.running("k")
