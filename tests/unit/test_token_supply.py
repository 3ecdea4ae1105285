"""`TokenSupply`: loads below the in-process cache keep working when the store fails,
and a load superseded again and again ends in a clear error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from broker.core.errors import (
    BrokerError,
)
from broker.core.models import Cached, TokenSource
from fakes import eventually
from harness import Harness


async def test_store_down_still_serves_from_the_idp(h: Harness) -> None:
    """With the store down, the broker fetches from the IdP on its own."""
    h.store.down = True

    issued = await h.broker.token("acme")

    assert (TokenSource.IDP, "token-acme-1") == (issued.source, issued.token.value)


async def test_store_down_keeps_single_flight_in_process(h: Harness) -> None:
    """With the store down, concurrent misses in one process still make one IdP request."""
    h.store.down = True
    gate = h.issuer.block()
    callers = [asyncio.create_task(h.broker.token("acme")) for _ in range(50)]
    await eventually(lambda: h.issuer.fetches == 1)
    gate.set()

    issued = await asyncio.gather(*callers)

    assert ({"token-acme-1"}, 1) == ({i.token.value for i in issued}, h.issuer.fetches)


async def test_store_down_serves_the_token_in_memory(h: Harness) -> None:
    """A token already in memory is served while the store is down."""
    await h.broker.token("acme")
    h.store.down = True

    issued = await h.broker.token("acme")

    assert (TokenSource.MEMORY, 1) == (issued.source, h.issuer.fetches)


async def test_store_failing_after_the_read_still_serves(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that dies between the read and the lock does not fail the request."""
    original_get: Callable[[str], Awaitable[Cached]] = h.store.get

    async def get_then_die(realm: str) -> Cached:
        cached = await original_get(realm)
        h.store.down = True
        return cached

    monkeypatch.setattr(h.store, "get", get_then_die)

    issued = await h.broker.token("acme")

    assert (TokenSource.IDP, 1) == (issued.source, h.issuer.fetches)


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
