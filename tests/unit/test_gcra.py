"""GCRA, the per-caller rate limit: a burst at once, then one request per interval."""

from __future__ import annotations

from typing import cast

from redis.exceptions import RedisClusterException

from broker.adapters.rate_limit import LocalRateLimiter, RedisRateLimiter, gcra
from broker.adapters.redis_connect import RedisClient
from broker.core.policy import RateLimit

LIMIT = RateLimit(per_second=2, burst=3)


class Monotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_allowed_at_once() -> None:
    """From a full bucket, `burst` requests in the same instant all pass."""
    tat, waits = 0.0, []
    for _ in range(3):
        wait, tat = gcra(tat, 10.0, LIMIT)
        waits.append(wait)
    assert [0.0, 0.0, 0.0] == waits


def test_beyond_the_burst_the_wait_is_one_interval() -> None:
    """The request after the burst must wait 1 / per_second seconds."""
    tat = 0.0
    for _ in range(3):
        _, tat = gcra(tat, 10.0, LIMIT)
    assert 0.5 == gcra(tat, 10.0, LIMIT)[0]


def test_a_refused_request_is_not_counted() -> None:
    """Refused requests leave the state alone, so a caller that backs off gets through."""
    tat = 0.0
    for _ in range(3):
        _, tat = gcra(tat, 10.0, LIMIT)
    _, after_refusal = gcra(tat, 10.0, LIMIT)
    assert tat == after_refusal


async def test_the_allowance_refills_at_the_rate() -> None:
    """After the burst, one more request passes per interval."""
    clock = Monotonic()
    limiter = LocalRateLimiter(monotonic=clock)
    for _ in range(3):
        await limiter.acquire("svc", LIMIT)
    clock.now += 0.5
    assert (0.0, 0.5) == (await limiter.acquire("svc", LIMIT), await limiter.acquire("svc", LIMIT))


async def test_callers_have_separate_allowances() -> None:
    """One caller exhausting its burst does not limit another."""
    limiter = LocalRateLimiter(monotonic=Monotonic())
    for _ in range(4):
        await limiter.acquire("chatty", LIMIT)
    assert 0.0 == await limiter.acquire("quiet", LIMIT)


class UnreachableCluster:
    """A Redis Cluster client with no node to ask: every script call raises."""

    def register_script(self, script: str) -> object:
        async def call(**_: object) -> int:
            raise RedisClusterException("no node reachable")

        return call


async def test_a_cluster_without_reachable_nodes_falls_back_to_the_process() -> None:
    """No reachable cluster node is Redis unavailable: the process limits, it does not fail."""
    limiter = RedisRateLimiter(cast(RedisClient, UnreachableCluster()), prefix="t")
    waits = [await limiter.acquire("billing", LIMIT) for _ in range(4)]
    assert [0.0, 0.0, 0.0] == waits[:3]
    assert waits[3] > 0
