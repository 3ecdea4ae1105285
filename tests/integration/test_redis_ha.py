"""Beyond one Redis: the `redis+sentinel://` and `redis+cluster://` URL forms, and brokers
on Redis Cluster and Redis Sentinel that keep serving through a failover of the master
and still fetch one token per token lifetime."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from atlas_broker_dev.redis_topologies import (
    RedisClusterSetup,
    RedisSentinelSetup,
    start_redis_cluster,
    start_redis_sentinel,
)
from broker.adapters.redis_connect import RedisEndpoint, parse_redis_url
from broker.core import rules
from broker.settings import SettingsError, load_settings
from stack import Stack, bearer

# Tokens live 8 s; with skew 1 and refresh_before 2 each successor is fetched at age ~5 s,
# which leaves a failover (1.5-3 s here) room between two refreshes.
LIFETIME = 8
CALLERS = 8
STREAM_LIMIT = 4 * LIFETIME  # seconds: the stream ends by itself, whatever happens


@pytest.fixture
def short_lived_tokens(stack: Stack) -> Iterator[None]:
    with stack.token_lifetime(LIFETIME):
        yield


@pytest.fixture
def redis_cluster(stack_dir: Path) -> Iterator[RedisClusterSetup]:
    log_dir = stack_dir / f"cluster-{uuid.uuid4().hex[:6]}"
    log_dir.mkdir()
    setup = start_redis_cluster(log_dir)
    yield setup
    setup.stop()


@pytest.fixture
def redis_sentinel(stack_dir: Path) -> Iterator[RedisSentinelSetup]:
    log_dir = stack_dir / f"sentinel-{uuid.uuid4().hex[:6]}"
    log_dir.mkdir()
    setup = start_redis_sentinel(log_dir)
    yield setup
    setup.stop()


def test_sentinel_url_names_sentinels_service_and_db() -> None:
    """A Sentinel URL yields its sentinels (default port 26379), service, db and password."""
    endpoint = parse_redis_url("redis+sentinel://:pw@10.0.0.1,10.0.0.2:26380/atlas/2")
    assert (
        RedisEndpoint(
            "sentinel", (("10.0.0.1", 26379), ("10.0.0.2", 26380)), "atlas", 2, None, "pw"
        )
        == endpoint
    )
    assert "pw" not in repr(endpoint)


def test_cluster_url_with_a_database_is_refused() -> None:
    """A Cluster has only database 0, so a Cluster URL with a path is refused."""
    with pytest.raises(ValueError, match="only database 0"):
        parse_redis_url("redis+cluster://127.0.0.1:7000/1")


def test_settings_refuse_a_sentinel_url_without_service_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Sentinel URL without its service name stops start-up, naming BROKER_REDIS_URL."""
    monkeypatch.setenv("BROKER_REDIS_URL", "redis+sentinel://127.0.0.1:26379")
    with pytest.raises(SettingsError, match=r"^BROKER_REDIS_URL: .*service_name"):
        load_settings()


class TokenStream:
    """`CALLERS` concurrent callers asking two replicas in turn; each replica's distinct
    tokens are kept in the order they were first served."""

    def __init__(self, stack: Stack, urls: list[str], realm: str) -> None:
        self.stack = stack
        self.urls = urls
        self.realm = realm
        self.statuses: list[int] = []
        self.tokens: dict[str, list[str]] = {url: [] for url in urls}
        self._stop = asyncio.Event()
        self._new_token = asyncio.Event()

    async def _caller(self, client: httpx.AsyncClient, index: int) -> None:
        url = self.urls[index % len(self.urls)]
        while not self._stop.is_set():
            response = await client.get(
                f"{url}/v1/realms/{self.realm}/token",
                params={"min_ttl": 1},
                headers=bearer(self.stack.keys.everything),
            )
            self.statuses.append(response.status_code)
            self.stack.served_tokens(response)
            if response.status_code == 200:
                token = response.json()["access_token"]
                if token not in self.tokens[url]:
                    self.tokens[url].append(token)
                    self._new_token.set()
            await asyncio.sleep(0.02)  # pacing, so the stream is steady rather than a flood

    async def until_every_replica_has(self, count: int) -> None:
        """Wait until each replica has served `count` distinct tokens."""
        while min(len(tokens) for tokens in self.tokens.values()) < count:
            self._new_token.clear()
            await self._new_token.wait()

    async def run(self, failover: Callable[[], object]) -> None:
        """Stream; once every replica serves the first refreshed token, fail over; stop
        once every replica serves the token refreshed after the failover."""
        async with httpx.AsyncClient(timeout=10) as client:
            callers = [asyncio.create_task(self._caller(client, i)) for i in range(CALLERS)]
            try:
                async with asyncio.timeout(STREAM_LIMIT):
                    await self.until_every_replica_has(2)
                    await asyncio.to_thread(failover)
                    await self.until_every_replica_has(3)
            finally:
                self._stop.set()
                await asyncio.gather(*callers)


def _ha_brokers(stack: Stack, redis_url: str) -> tuple[list[str], str]:
    prefix = f"ha-{uuid.uuid4().hex[:8]}"
    servers = stack.start_brokers(
        2,
        BROKER_REDIS_URL=redis_url,
        BROKER_KEY_PREFIX=prefix,
        BROKER_EXPIRY_SKEW="1",
        BROKER_REFRESH_BEFORE="2",
    )
    return [server.url for server in servers], prefix


@pytest.mark.usefixtures("short_lived_tokens")
async def test_cluster_master_crash_fails_no_request_and_keeps_one_fetch_per_lifetime(
    stack: Stack, redis_cluster: RedisClusterSetup
) -> None:
    """Two replicas on a three-master Redis Cluster: the master holding the realm's token
    is killed mid-stream; every request succeeds and the IdP sees one request per token."""
    urls, prefix = _ha_brokers(stack, redis_cluster.url)
    realm = stack.new_realm("cluster")
    stream = TokenStream(stack, urls, realm.name)

    await stream.run(lambda: redis_cluster.kill_master_of(rules.token_key(prefix, realm.name)))

    assert [] == [status for status in stream.statuses if status != 200]
    assert 3 == stack.idp_requests(realm.name)
    assert stream.tokens[urls[0]] == stream.tokens[urls[1]]


@pytest.mark.usefixtures("short_lived_tokens")
async def test_sentinel_master_crash_fails_no_request_and_keeps_one_fetch_per_lifetime(
    stack: Stack, redis_sentinel: RedisSentinelSetup
) -> None:
    """Two replicas on a Sentinel-managed master: the master is killed mid-stream and the
    sentinels promote its replica; every request succeeds and the IdP sees one request
    per token."""
    urls, _ = _ha_brokers(stack, redis_sentinel.url)
    realm = stack.new_realm("sentinel")
    stream = TokenStream(stack, urls, realm.name)
    old_master = redis_sentinel.master.port

    await stream.run(redis_sentinel.kill_master)

    assert old_master != redis_sentinel.master_port()
    assert [] == [status for status in stream.statuses if status != 200]
    assert 3 == stack.idp_requests(realm.name)
    assert stream.tokens[urls[0]] == stream.tokens[urls[1]]
