"""`RedisTokenStore`: tokens, fetch locks and signals shared by every replica via Redis.

Keys (the realm in braces is a Redis Cluster hash tag, so all of a realm's keys share
a slot):
- `{prefix}:token:{realm}`: `{"g": generation, "t": sealed token}` with a TTL from the
  token's expiry; after an eviction a tombstone `{"g": generation}`. The generation
  lives in the same key so "store unless evicted since the fetch began" is one atomic
  script, and a fetch racing an eviction cannot write its token back;
- `{prefix}:lock:{realm}`: the fetching replica's owner id;
- `{prefix}:backoff:{realm}`: the shared "next IdP attempt" of a failing realm;
- a scoped token (a realm and a scope set, `rules.slot`) has its own token, lock, backoff
  and forced-fetch keys, `{prefix}:token:{realm}:{digest of the set}`, and is listed in
  `{prefix}:scopes:{realm}` so an eviction of the realm reaches it on every replica;
- channel `{prefix}:invalidations`: evictions and rotations, for every replica.

Redis is a neighbour, not a friend: whoever can write it must not be able to serve a
stale token or stall the realm. So a sealed value opens only under the key prefix, realm
and generation it was sealed for (`token_seal`); a value whose generation is below one
this process has seen (written back from before an eviction) is a miss; a backoff's next
attempt is never further away than `backoff_max`; and a lock without a TTL, or with one
longer than two leases, is given two leases to live, so it cannot block a realm forever.

After a failure the store stays closed for a growing interval (a circuit breaker), so a
dead Redis costs requests nothing while the broker serves on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from broker.adapters import redis_scripts as scripts
from broker.adapters.redis_connect import REDIS_FAILURES, RedisClient, connect_ha, is_ha_url
from broker.adapters.token_seal import Keyring, TokenSealer
from broker.core import rules
from broker.core.errors import StoreUnavailable
from broker.core.models import AccessToken, Backoff, Cached, Invalidation

log = logging.getLogger(__name__)

TOMBSTONE_TTL_MS = 3_600_000
# The core's lock lease (BrokerTimings.lock_lease): `lock_held` is not told the lease, and
# gives a lock without a sane TTL two of these to live.
_HELD_LEASE_MS = 15_000
# backoff_delay stops doubling after 32 failures; a larger count from Redis means nothing.
_MAX_FAILURES = 64
_BREAKER_MIN, _BREAKER_MAX = 0.5, 10.0
_SLOT_INDEX_TTL_MS = 86_400_000
_MAX_SCOPED_SLOTS = 256


def create_redis(url: str) -> RedisClient:
    """A client that fails fast: a dead Redis must cost a request milliseconds, not
    seconds, because the broker can serve without it. `redis+sentinel://` and
    `redis+cluster://` URLs are built in `redis_connect`."""
    if is_ha_url(url):
        return connect_ha(url, client_name="atlas-broker")
    return aioredis.from_url(
        url,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        health_check_interval=15,
        client_name="atlas-broker",
        decode_responses=False,
        # One quick retry: after a Redis restart the pool's first connection is stale.
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


class RedisTokenStore:
    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str,
        keyring: Callable[[], Awaitable[Keyring]],
        backoff_max: float = 3600.0,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._backoff_max = backoff_max
        # The highest generation seen per realm: a token below it was written back.
        self._generations: dict[str, int] = {}
        self._channel = f"{prefix}:invalidations"
        self._load_keyring = keyring
        self._sealer: TokenSealer | None = None
        self._keyring_retry_at = 0.0
        self._release = client.register_script(scripts.RELEASE)
        self._extend = client.register_script(scripts.EXTEND)
        self._put = client.register_script(scripts.PUT)
        self._evict = client.register_script(scripts.EVICT)
        self._acquire = client.register_script(scripts.ACQUIRE)
        self._held = client.register_script(scripts.HELD)
        self._open_until = 0.0
        self._breaker_delay = _BREAKER_MIN

    # -- failure handling ---------------------------------------------------------------

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        if time.monotonic() < self._open_until:
            raise StoreUnavailable("redis: unavailable, retrying shortly")
        try:
            yield
        except REDIS_FAILURES as exc:
            self._open_until = time.monotonic() + self._breaker_delay
            self._breaker_delay = min(self._breaker_delay * 2, _BREAKER_MAX)
            raise StoreUnavailable(f"redis: {type(exc).__name__}") from exc
        self._breaker_delay = _BREAKER_MIN

    async def _sealer_or_none(self) -> TokenSealer | None:
        """The sealer, loading the keyring (from Vault) on first use; without it tokens are
        not shared rather than stored in the clear."""
        if self._sealer is None and time.monotonic() >= self._keyring_retry_at:
            try:
                self._sealer = TokenSealer(await self._load_keyring(), namespace=self._prefix)
            except Exception as exc:
                self._keyring_retry_at = time.monotonic() + 5.0
                log.warning("cache key unavailable", extra={"error": type(exc).__name__})
        return self._sealer

    # -- tokens -------------------------------------------------------------------------

    async def get(self, realm: str) -> Cached:
        with self._guard():
            raw = await self._redis.get(rules.token_key(self._prefix, realm))
        if raw is None:
            # Redis lost the key (a restart without persistence, a deletion): the next
            # token is stored at the generation seen here, not below it.
            return Cached(None, self._generations.get(realm, 0))
        try:
            doc: Any = json.loads(raw)
            generation = int(doc.get("g", 0))
            sealed = doc.get("t")
        except (ValueError, AttributeError, TypeError):
            log.warning(
                "unreadable token value in redis, treated as a miss", extra={"realm": realm}
            )
            return Cached(None, 0)
        if not isinstance(sealed, str):
            self._saw(realm, generation)
            return Cached(None, generation)
        seen = self._generations.get(realm, 0)
        if generation < seen:
            log.warning(
                "token value in redis is older than an eviction seen here, treated as a miss",
                extra={"realm": realm, "generation": generation, "seen": seen},
            )
            return Cached(None, seen)
        sealer = await self._sealer_or_none()
        token = sealer.open(realm, sealed, generation=generation) if sealer else None
        if token is None:
            log.warning(
                "token value in redis does not open for this realm, prefix and generation",
                extra={"realm": realm},
            )
        self._saw(realm, generation)
        return Cached(token, generation)

    def _saw(self, realm: str, generation: int) -> None:
        # Only realms with a generation above 0 (evicted at least once) are remembered.
        if generation > self._generations.get(realm, 0):
            self._generations[realm] = generation

    async def put(
        self,
        realm: str,
        token: AccessToken,
        ttl: float,
        *,
        generation: int,
        only_if_absent: bool = False,
    ) -> bool:
        ttl_ms = int(ttl * 1000)
        if ttl_ms <= 0:  # Redis refuses a PX of 0: a token that has no millisecond left
            return False
        sealer = await self._sealer_or_none()
        if sealer is None:
            # Not False: that means "superseded" to the core, which would fetch again.
            raise StoreUnavailable("the token cache key is unavailable")
        sealed = sealer.seal(realm, token, generation=generation)
        value = json.dumps({"g": generation, "t": sealed})
        with self._guard():
            stored = await self._put(
                keys=[rules.token_key(self._prefix, realm)],
                args=[generation, value, ttl_ms, "1" if only_if_absent else "0"],
            )
        if stored:
            self._saw(realm, generation)
            if rules.split_slot(realm)[1]:
                await self._index_slot(realm)
        return bool(stored)

    async def _index_slot(self, slot: str) -> None:
        # The realm's scoped slots, so an eviction reaches those only other replicas hold.
        # As many as the policy allows scope sets; kept a day past the last token stored.
        key = rules.realm_key(self._prefix, "scopes", rules.split_slot(slot)[0])
        with self._guard():
            await self._redis.sadd(key, slot)
            await self._redis.pexpire(key, _SLOT_INDEX_TTL_MS)

    async def scoped_slots(self, realm: str) -> list[str]:
        # At most _MAX_SCOPED_SLOTS, so a neighbour who filled the set cannot make an
        # eviction walk (and keep state for) millions of made-up names.
        with self._guard():
            members = await self._redis.srandmember(
                rules.realm_key(self._prefix, "scopes", realm), _MAX_SCOPED_SLOTS
            )
        if not isinstance(members, list):  # with a count, a list (none: an empty one)
            return []
        slots = (m.decode() if isinstance(m, bytes) else str(m) for m in members)
        # Only names of this realm that parse as scope sets: Redis is a neighbour.
        return sorted(s for s in slots if _is_scoped_slot_of(s, realm))

    async def evict(self, realm: str, *, reason: str) -> int:
        with self._guard():
            generation = await self._evict(
                keys=[rules.token_key(self._prefix, realm)],
                args=[TOMBSTONE_TTL_MS, self._channel, realm, reason],
            )
        self._saw(realm, int(generation))
        return int(generation)

    async def invalidations(self) -> AsyncIterator[Invalidation | None]:
        """Follow the invalidation channel; `None` marks each (re)subscription, after which
        the caller catches up on what it may have missed.

        redis-py re-subscribes by itself after a dropped connection; the server confirms
        every subscription with a `subscribe` message, which is what marks it here.
        """
        delay = _BREAKER_MIN
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    delay = _BREAKER_MIN
                    if message.get("type") == "subscribe":
                        self._close_breaker()  # Redis answers again
                        yield None
                    elif message.get("type") == "message":
                        parsed = _invalidation(message.get("data"))
                        if parsed is not None:
                            yield parsed
            except REDIS_FAILURES:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BREAKER_MAX)
            finally:
                with contextlib.suppress(*REDIS_FAILURES):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    # -- locks --------------------------------------------------------------------------

    async def acquire_lock(self, realm: str, owner: str, lease: float) -> bool:
        with self._guard():
            taken = await self._acquire(
                keys=[rules.lock_key(self._prefix, realm)], args=[owner, int(lease * 1000)]
            )
        return bool(taken)

    async def extend_lock(self, realm: str, owner: str, lease: float) -> bool:
        with self._guard():
            extended = await self._extend(
                keys=[rules.lock_key(self._prefix, realm)], args=[owner, int(lease * 1000)]
            )
        return bool(extended)

    async def release_lock(self, realm: str, owner: str) -> None:
        with self._guard():
            await self._release(keys=[rules.lock_key(self._prefix, realm)], args=[owner])

    async def lock_held(self, realm: str) -> bool:
        with self._guard():
            held = await self._held(
                keys=[rules.lock_key(self._prefix, realm)], args=[_HELD_LEASE_MS]
            )
        return bool(held)

    # -- forced fetches -----------------------------------------------------------------

    async def claim_forced_fetch(self, realm: str, interval: float) -> float:
        key = rules.forced_fetch_key(self._prefix, realm)
        window_ms = max(1, int(interval * 1000))
        with self._guard():
            if await self._redis.set(key, b"1", nx=True, px=window_ms):
                return 0.0
            left_ms = int(await self._redis.pttl(key))
            if left_ms == -1 or left_ms > window_ms:
                # A window without expiry, or longer than any broker opens (not ours:
                # written by hand): bound it again.
                await self._redis.pexpire(key, window_ms)
                left_ms = window_ms
        # -2: the window closed between the two calls; refuse this once, briefly.
        return max(left_ms, 1) / 1000

    # -- shared backoff -----------------------------------------------------------------

    def _backoff_key(self, realm: str) -> str:
        return rules.backoff_key(self._prefix, realm)

    async def get_backoff(self, realm: str) -> Backoff | None:
        with self._guard():
            raw = await self._redis.get(self._backoff_key(realm))
        try:
            doc = json.loads(raw) if raw else None
            if not doc:
                return None
            failures, next_attempt, error = int(doc["failures"]), float(doc["next"]), doc["error"]
        except (ValueError, KeyError, TypeError, OverflowError):
            return None
        if not isinstance(error, str) or next_attempt != next_attempt:  # NaN
            return None
        # Nothing a broker writes lies further ahead than backoff_max: clamp, so a written
        # "next attempt in a year" cannot stall the realm.
        backoff = Backoff(max(1, min(failures, _MAX_FAILURES)), next_attempt, error[:200])
        latest = time.time() + self._backoff_max
        if next_attempt > latest:
            log.warning(
                "backoff in redis beyond BROKER_IDP_BACKOFF_MAX, clamped", extra={"realm": realm}
            )
            # Written back clamped, or every later read would clamp to "now + max" again.
            backoff = Backoff(backoff.failures, latest, backoff.error)
            await self.set_backoff(realm, backoff)
        return backoff

    async def set_backoff(self, realm: str, backoff: Backoff) -> None:
        value = json.dumps(
            {"failures": backoff.failures, "next": backoff.next_attempt_at, "error": backoff.error}
        )
        # Kept a while past the next attempt so the failure count survives to it.
        ttl = max(1, int(backoff.next_attempt_at - time.time()) * 4 + 60)
        with self._guard():
            await self._redis.set(self._backoff_key(realm), value, ex=ttl)

    async def clear_backoff(self, realm: str) -> None:
        with self._guard():
            await self._redis.delete(self._backoff_key(realm))

    async def ping(self) -> None:
        # Not through the breaker: readiness must see Redis return.
        try:
            await self._redis.ping()
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}") from exc
        self._close_breaker()

    def _close_breaker(self) -> None:
        self._open_until = 0.0
        self._breaker_delay = _BREAKER_MIN

    async def aclose(self) -> None:
        await self._redis.aclose()


def _is_scoped_slot_of(slot: str, realm: str) -> bool:
    name, scopes = rules.split_slot(slot)
    try:
        return name == realm and bool(scopes) and rules.parse_scopes(" ".join(scopes)) == scopes
    except ValueError:
        return False


def _invalidation(data: object) -> Invalidation | None:
    try:
        doc: Any = json.loads(data)  # type: ignore[arg-type]
        return Invalidation(str(doc["realm"]), int(doc["generation"]), str(doc["reason"]))
    except (ValueError, KeyError, TypeError):
        return None
