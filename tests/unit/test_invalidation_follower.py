"""`InvalidationFollower`: other replicas' evictions are followed, and one catch-up runs
at a time however often the subscription flaps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from broker.core.errors import (
    StoreUnavailable,
)
from broker.core.models import Cached, Invalidation
from fakes import eventually
from harness import ADMIN, CTX, Harness, MakeHarness


def _catch_up_tasks() -> list[asyncio.Task[Any]]:
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done()
        and getattr(task.get_coro(), "__qualname__", "").endswith("._catch_up_until_done")
    ]


async def test_eviction_on_one_replica_drops_the_token_on_another(
    make_harness: MakeHarness,
) -> None:
    """An eviction is broadcast: a peer replica sharing the store drops its token too."""
    first = make_harness()
    second = make_harness(peer_of=first)
    second.broker.start()
    await second.broker.token("acme")

    await first.broker.evict("acme", actor=ADMIN, ctx=CTX)

    await eventually(lambda: not second.broker.realm_status("acme").cached)


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
