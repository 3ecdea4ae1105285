"""Concurrency defects of the core, each pinned by the behaviour that must hold instead."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from broker.core.broker import BrokerTimings
from broker.core.errors import BrokerError, StoreUnavailable
from broker.core.models import Cached, Invalidation, TokenSource
from fakes import eventually
from harness import ADMIN, CTX, Harness, MakeHarness


def _catch_up_tasks() -> list[asyncio.Task[Any]]:
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done()
        and getattr(task.get_coro(), "__qualname__", "").endswith("._catch_up_until_done")
    ]


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


async def test_version_watch_ends_with_a_token_from_the_new_secret(
    make_harness: MakeHarness,
) -> None:
    """A new Vault version noticed while a fetch with the old secret is in flight still
    leads to a token obtained with the new secret."""
    h = make_harness(timings=BrokerTimings(vault_poll=0.01))
    await h.broker.token("acme")
    h.advance(200)
    gate = h.issuer.block()
    in_flight = asyncio.create_task(h.broker.token("acme", min_ttl=3500))
    await eventually(lambda: h.issuer.fetches == 2)  # with secret version 1
    h.secrets.rotate("acme")
    h.broker.start()
    await h.clock.run_until(lambda: bool(h.audit.named("credentials.rotated")))
    gate.set()
    await in_flight

    await h.clock.run_until(lambda: 2 in h.issuer.versions_seen)
    assert 2 == (await h.broker.token("acme")).token.credential_version


async def test_flapping_subscription_runs_one_catch_up_at_a_time(h: Harness) -> None:
    """Each resubscription replaces the running catch-up (cancelled, awaited) instead of
    starting another loop beside it."""
    await h.broker.token("acme")
    resubscribed = 0

    async def flapping() -> AsyncIterator[Invalidation | None]:
        nonlocal resubscribed
        for _ in range(3):
            resubscribed += 1
            yield None
        await asyncio.Event().wait()

    async def store_down(realm: str) -> Cached:
        raise StoreUnavailable("redis: ConnectionError")

    h.shared.invalidations = flapping  # type: ignore[method-assign]
    h.shared.get = store_down  # type: ignore[method-assign]
    h.broker.start()
    await h.clock.run_until(lambda: resubscribed == 3)

    assert 1 == len(_catch_up_tasks())


async def test_aclose_leaves_no_catch_up_running(h: Harness) -> None:
    """After aclose() no catch-up loop is left behind, however often the stream flapped."""
    await h.broker.token("acme")

    async def flapping() -> AsyncIterator[Invalidation | None]:
        for _ in range(3):
            yield None
        await asyncio.Event().wait()

    async def store_down(realm: str) -> Cached:
        raise StoreUnavailable("redis: ConnectionError")

    h.shared.invalidations = flapping  # type: ignore[method-assign]
    h.shared.get = store_down  # type: ignore[method-assign]
    h.broker.start()
    await h.clock.run_until(lambda: len(_catch_up_tasks()) >= 1)

    await h.broker.aclose()

    assert [] == _catch_up_tasks()


async def test_refresher_is_woken_by_a_shorter_lived_successor(h: Harness) -> None:
    """When the realm's token is replaced by one that dies sooner, the refresh is planned
    for the new token, not left sleeping until the old one's refresh point."""
    await h.broker.token("acme")  # 3600 s: refresh due after 3270 s
    await h.broker.evict("acme", actor=ADMIN, ctx=CTX)
    h.issuer.lifetime = 600
    await h.broker.token("acme")  # 600 s: refresh due after 270 s

    await h.clock.run_until(lambda: h.issuer.fetches == 3, max_jumps=200)

    assert h.clock.monotonic() < 600


async def test_endless_evictions_end_in_a_clear_error_after_few_fetches(h: Harness) -> None:
    """A realm evicted during every fetch is not fetched forever: after a few attempts the
    caller gets a retryable error."""

    async def evict_meanwhile() -> None:
        if h.issuer.fetches <= 50:
            await h.shared.evict("acme", reason="evicted")

    h.issuer.after_fetch = evict_meanwhile

    with pytest.raises(BrokerError) as caught:
        await h.broker.token("acme")

    assert (True, True) == (h.issuer.fetches <= 5, caught.value.retry_after is not None)


async def test_eviction_the_store_refused_is_audited_as_a_failure(h: Harness) -> None:
    """An eviction that could not reach the store raises and is audited as a failure."""
    await h.broker.token("acme")
    h.store.down = True

    with pytest.raises(StoreUnavailable):
        await h.broker.evict("acme", actor=ADMIN, ctx=CTX)

    [event] = h.audit.named("token.evicted")
    assert ("failure", "token-store-unavailable") == (event.outcome, event.reason)


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


async def test_refresh_runs_on_virtual_time(h: Harness) -> None:
    """The refresher sleeps on the injected clock: past the refresh point on virtual time,
    the successor is fetched."""
    await h.broker.token("acme")

    await h.clock.run_until(lambda: h.issuer.fetches == 2, max_jumps=200)

    assert "token-acme-2" == (await h.broker.token("acme")).token.value
