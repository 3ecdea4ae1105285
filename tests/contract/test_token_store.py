"""The token store contract: the same tests against `MemoryTokenStore` and against
`RedisTokenStore` on a real Redis, so the core's unit tests (on the memory store) hold
for the store replicas share.

Each test gets a store and its `peer`, another replica on the same shared state: for
Redis a second client on the same key prefix, for the single-process memory store the
store itself. Every Redis test has a key prefix of its own.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TypeVar

import pytest

from atlas_broker_dev.servers import RedisServer
from broker.adapters.clock import SystemClock
from broker.adapters.memory_store import MemoryTokenStore
from broker.adapters.redis_store import RedisTokenStore, create_redis
from broker.adapters.token_seal import Keyring
from broker.core.errors import StoreUnavailable
from broker.core.models import AccessToken, Backoff, Invalidation
from broker.core.ports import TokenStore
from polling import eventually
from redis_proxy import RedisProxy

T = TypeVar("T")
REALM = "acme"


@dataclass
class Stores:
    store: TokenStore
    peer: TokenStore


def token(value: str = "token-1", *, lives: float = 3600.0) -> AccessToken:
    now = time.time()
    return AccessToken(
        value=value, expires_at=now + lives, issued_at=now, scope="read", credential_version=3
    )


async def bounded(step: Awaitable[T]) -> T:
    """`step`, failing the test rather than hanging it when it never completes."""
    return await asyncio.wait_for(step, timeout=10)


@pytest.fixture(params=["memory", "redis"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Stores]:
    if request.param == "memory":
        memory = MemoryTokenStore(clock=SystemClock())
        yield Stores(memory, memory)
        await memory.aclose()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    keyring = Keyring.generate()

    async def load_keyring() -> Keyring:
        return keyring

    prefix = f"contract-{uuid.uuid4().hex[:8]}"
    store, peer = (
        RedisTokenStore(create_redis(server.url), prefix=prefix, keyring=load_keyring)
        for _ in range(2)
    )
    yield Stores(store, peer)
    await store.aclose()
    await peer.aclose()


# -- tokens and generations ----------------------------------------------------------------


async def test_unknown_realm_has_no_token_and_generation_zero(stores: Stores) -> None:
    """A realm nothing was stored for reads as no token at generation 0."""
    cached = await stores.store.get(REALM)
    assert (None, 0) == (cached.token, cached.generation)


async def test_stored_token_is_read_back_by_a_peer(stores: Stores) -> None:
    """A token put at a generation is read back whole, with that generation, by a peer."""
    stored = token()
    assert await stores.store.put(REALM, stored, 60, generation=0)
    cached = await stores.peer.get(REALM)
    assert (stored, 0) == (cached.token, cached.generation)


@pytest.mark.parametrize("ttl", [0, -5, 0.0004])
async def test_token_without_a_positive_ttl_is_not_stored(stores: Stores, ttl: float) -> None:
    """A TTL at or below zero, or under a millisecond, stores nothing and does not fail."""
    await stores.store.put(REALM, token(), ttl, generation=0)
    assert (await stores.store.get(REALM)).token is None


async def test_token_is_gone_after_its_ttl(stores: Stores) -> None:
    """A token put with a short TTL reads as absent once the TTL has passed."""
    await stores.store.put(REALM, token(), 0.2, generation=0)
    await eventually(
        lambda: _absent(stores.peer), timeout=10, message="token outlived its TTL", interval=0.05
    )


async def _absent(store: TokenStore) -> bool:
    return (await store.get(REALM)).token is None


async def test_put_replaces_a_token_of_the_same_generation(stores: Stores) -> None:
    """A refresh (same generation) replaces the stored token."""
    await stores.store.put(REALM, token("old"), 60, generation=0)
    assert await stores.peer.put(REALM, token("new"), 60, generation=0)
    assert "new" == _value((await stores.store.get(REALM)).token)


async def test_only_if_absent_keeps_the_token_that_is_there(stores: Stores) -> None:
    """With only_if_absent a put next to an existing token stores nothing."""
    await stores.store.put(REALM, token("first"), 60, generation=0)
    assert not await stores.peer.put(REALM, token("second"), 60, generation=0, only_if_absent=True)
    assert "first" == _value((await stores.store.get(REALM)).token)


async def test_only_if_absent_stores_into_an_empty_realm(stores: Stores) -> None:
    """With only_if_absent a put into an empty realm stores the token."""
    assert await stores.store.put(REALM, token(), 60, generation=0, only_if_absent=True)
    assert (await stores.peer.get(REALM)).token is not None


async def test_eviction_drops_the_token_and_raises_the_generation(stores: Stores) -> None:
    """Each eviction leaves no token and a generation one higher than before."""
    await stores.store.put(REALM, token(), 60, generation=0)
    generations = [await stores.peer.evict(REALM, reason="evicted") for _ in range(2)]
    cached = await stores.store.get(REALM)
    assert ([1, 2], None, 2) == (generations, cached.token, cached.generation)


async def test_fetch_begun_before_an_eviction_cannot_write_back(stores: Stores) -> None:
    """A put at the generation seen before an eviction is refused; at the new one it lands."""
    await stores.peer.evict(REALM, reason="evicted")
    stale = await stores.store.put(REALM, token("stale"), 60, generation=0)
    fresh = await stores.store.put(REALM, token("fresh"), 60, generation=1)
    assert (False, True) == (stale, fresh)
    assert "fresh" == _value((await stores.peer.get(REALM)).token)


async def test_put_at_an_older_generation_than_the_stored_token_is_refused(
    stores: Stores,
) -> None:
    """A token stored at a later generation is not replaced by one from an earlier one."""
    await stores.store.put(REALM, token("newer"), 60, generation=2)
    assert not await stores.peer.put(REALM, token("older"), 60, generation=1)
    cached = await stores.store.get(REALM)
    assert ("newer", 2) == (_value(cached.token), cached.generation)


async def test_only_if_absent_does_not_fill_an_evicted_realm(stores: Stores) -> None:
    """The mark an eviction leaves counts as present for only_if_absent."""
    generation = await stores.store.evict(REALM, reason="evicted")
    assert not await stores.peer.put(REALM, token(), 60, generation=generation, only_if_absent=True)


async def test_realms_are_independent(stores: Stores) -> None:
    """Evicting one realm leaves another realm's token and generation alone."""
    await stores.store.put("other", token("other"), 60, generation=0)
    await stores.store.evict(REALM, reason="evicted")
    cached = await stores.peer.get("other")
    assert ("other", 0) == (_value(cached.token), cached.generation)


# -- invalidations ---------------------------------------------------------------------------


async def test_subscription_starts_with_a_catch_up_mark_then_carries_evictions(
    stores: Stores,
) -> None:
    """A new subscription first yields None (catch up), then each eviction by any replica."""
    subscription = stores.store.invalidations()
    try:
        first = await bounded(anext(subscription))
        generation = await stores.peer.evict(REALM, reason="rotated")
        second = await bounded(anext(subscription))
    finally:
        await subscription.aclose()  # type: ignore[attr-defined]
    assert (None, Invalidation(REALM, generation, "rotated")) == (first, second)


# -- the fetch lock --------------------------------------------------------------------------


async def test_lock_is_held_by_one_owner_at_a_time(stores: Stores) -> None:
    """While one owner holds the lock no other owner can take it, and it shows as held."""
    taken = await stores.store.acquire_lock(REALM, "owner-a", 30)
    refused = await stores.peer.acquire_lock(REALM, "owner-b", 30)
    assert (True, False, True) == (taken, refused, await stores.peer.lock_held(REALM))


async def test_only_the_owner_extends_the_lock(stores: Stores) -> None:
    """Extending succeeds for the owner and fails for anyone else."""
    await stores.store.acquire_lock(REALM, "owner-a", 30)
    by_owner = await stores.store.extend_lock(REALM, "owner-a", 30)
    by_other = await stores.peer.extend_lock(REALM, "owner-b", 30)
    assert (True, False) == (by_owner, by_other)


async def test_release_by_another_owner_leaves_the_lock(stores: Stores) -> None:
    """Compare-and-delete: a release by a non-owner does nothing."""
    await stores.store.acquire_lock(REALM, "owner-a", 30)
    await stores.peer.release_lock(REALM, "owner-b")
    assert await stores.store.lock_held(REALM)
    assert not await stores.peer.acquire_lock(REALM, "owner-b", 30)


async def test_release_by_the_owner_frees_the_lock(stores: Stores) -> None:
    """After the owner releases, the lock is free and another owner can take it."""
    await stores.store.acquire_lock(REALM, "owner-a", 30)
    await stores.store.release_lock(REALM, "owner-a")
    assert not await stores.peer.lock_held(REALM)
    assert await stores.peer.acquire_lock(REALM, "owner-b", 30)


async def test_lock_lapses_after_its_lease(stores: Stores) -> None:
    """A lock not extended is free once its lease ran out, and can no longer be extended."""
    await stores.store.acquire_lock(REALM, "owner-a", 0.2)
    await eventually(
        lambda: _free(stores.peer), timeout=10, message="lease never lapsed", interval=0.05
    )
    assert not await stores.store.extend_lock(REALM, "owner-a", 30)
    assert await stores.peer.acquire_lock(REALM, "owner-b", 30)


async def _free(store: TokenStore) -> bool:
    return not await store.lock_held(REALM)


async def test_locks_of_realms_are_independent(stores: Stores) -> None:
    """Holding one realm's lock does not hold another's."""
    await stores.store.acquire_lock(REALM, "owner-a", 30)
    assert await stores.peer.acquire_lock("other", "owner-b", 30)


# -- the shared backoff ----------------------------------------------------------------------


async def test_backoff_is_shared_then_cleared(stores: Stores) -> None:
    """A backoff set by one replica is read by another, and is gone once cleared."""
    backoff = Backoff(failures=2, next_attempt_at=time.time() + 4.5, error="idp-unavailable")
    before = await stores.peer.get_backoff(REALM)
    await stores.store.set_backoff(REALM, backoff)
    shared = await stores.peer.get_backoff(REALM)
    await stores.peer.clear_backoff(REALM)
    assert (None, backoff, None) == (before, shared, await stores.store.get_backoff(REALM))


async def test_store_answers_a_ping(stores: Stores) -> None:
    """A reachable store answers ping without raising."""
    await stores.store.ping()


def _value(stored: AccessToken | None) -> str | None:
    return stored.value if stored is not None else None


async def test_redis_store_without_its_cache_key_is_unavailable_not_superseded(
    redis_server: RedisServer,
) -> None:
    """A Redis store that cannot load the key sealing tokens raises StoreUnavailable on put
    (the core then serves on its own) rather than answering "superseded", which would
    make the core fetch again and again."""

    async def no_keyring() -> Keyring:
        raise StoreUnavailable("vault refused the cache key")

    store = RedisTokenStore(
        create_redis(redis_server.url),
        prefix=f"contract-{uuid.uuid4().hex[:8]}",
        keyring=no_keyring,
    )
    try:
        with pytest.raises(StoreUnavailable):
            await store.put(REALM, token(), 60, generation=0)
    finally:
        await store.aclose()


async def test_redis_subscription_marks_each_resubscription(redis_server: RedisServer) -> None:
    """When the connection to Redis drops, the subscription yields None again once it is
    back (the core then catches up on what it missed), and carries evictions after it."""
    proxy = await RedisProxy(redis_server.port).start()
    prefix = f"contract-{uuid.uuid4().hex[:8]}"
    keyring = Keyring.generate()

    async def load_keyring() -> Keyring:
        return keyring

    store = RedisTokenStore(create_redis(proxy.url), prefix=prefix, keyring=load_keyring)
    peer = RedisTokenStore(create_redis(redis_server.url), prefix=prefix, keyring=load_keyring)
    subscription = store.invalidations()
    try:
        first = await bounded(anext(subscription))
        proxy.cut()
        again = await bounded(anext(subscription))
        generation = await peer.evict(REALM, reason="evicted")
        after = await bounded(anext(subscription))
    finally:
        await subscription.aclose()  # type: ignore[attr-defined]
        await store.aclose()
        await peer.aclose()
        await proxy.aclose()
    assert (None, None, Invalidation(REALM, generation, "evicted")) == (first, again, after)
