"""Redis clients for the three deployment forms `BROKER_REDIS_URL` names.

    redis://[[user]:password@]host[:port][/db]        one server (also rediss://, unix://)
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db]
    redis+cluster://[[user]:password@]host[:port][,host[:port]...]
    rediss+sentinel://... and rediss+cluster://...     the same over TLS

TLS (`rediss+`): every connection, to the sentinels as well as to the master, or to every
cluster node, is TLS with the server's certificate verified (hostname included) against
the system CAs, or the CA file named in the query: `?ssl_ca_certs=/path/ca.pem`. Also
accepted: `ssl_certfile` and `ssl_keyfile` (a client certificate, for `tls-auth-clients`),
`ssl_cert_reqs` (`required`, the default, `optional` or `none`) and `ssl_check_hostname`
(`true` or `false`). Plain `redis+` URLs take no query.

Sentinel: the hosts are the sentinels (default port 26379), `service_name` is the name
the sentinels monitor (`sentinel monitor <service_name> ...`), `db` defaults to 0. The
user and password are those of the Redis master; the sentinels are asked without them.
Cluster: the hosts are seed nodes (default port 6379); the client learns the rest of the
cluster from them, so two or three seeds are enough. A cluster has only database 0.

Every key the broker's Lua scripts touch is passed as their one `KEYS[1]`, so the
scripts run on a cluster unchanged (redis-py routes `EVALSHA` by that key's slot).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, ClusterPubSub
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import EqualJitterBackoff
from redis.exceptions import RedisClusterException, RedisError

RedisClient = aioredis.Redis | aioredis.RedisCluster
# What a failing Redis raises. RedisClusterException ("no reachable node", a certificate
# refused by every seed) is not a RedisError.
REDIS_FAILURES: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)

SENTINEL_SCHEME = "redis+sentinel://"
CLUSTER_SCHEME = "redis+cluster://"
TLS_SENTINEL_SCHEME = "rediss+sentinel://"
TLS_CLUSTER_SCHEME = "rediss+cluster://"
HA_SCHEMES = (SENTINEL_SCHEME, CLUSTER_SCHEME, TLS_SENTINEL_SCHEME, TLS_CLUSTER_SCHEME)
_TLS_PATHS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_CERT_REQS = ("required", "optional", "none")
_DEFAULT_PORT = {"sentinel": 26379, "cluster": 6379}
_HOST_PORT = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9._-]+))(?::(?P<port>\d{1,5}))?$"
)
_SERVICE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

# Timeouts as for one server: a dead node must cost a request about a second, because
# the broker can serve without Redis.
_SOCKET_TIMEOUT = 1.0
_HEALTH_CHECK_INTERVAL = 15
# A failover takes seconds (Sentinel's down-after-milliseconds plus an election, or a
# cluster replica's node timeout plus its election). Retrying with backoff capped at 1 s
# for up to ~5-9 s lets a lock or a put made during the switch land on the new master
# instead of failing over to the broker's fetch-alone path.
_FAILOVER_RETRY_COUNT = 12
_FAILOVER_BACKOFF = EqualJitterBackoff(cap=1.0, base=0.05)


@dataclass(frozen=True, slots=True)
class RedisEndpoint:
    """A parsed `redis+sentinel://` or `redis+cluster://` URL. The password stays out of
    `repr`, so an endpoint in a log line or an error does not carry it."""

    kind: Literal["sentinel", "cluster"]
    nodes: tuple[tuple[str, int], ...]
    service_name: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    # None: plain TCP. Otherwise the redis-py TLS options (`ssl_*`) from the URL's query.
    tls: dict[str, str | bool] | None = None


def is_ha_url(url: str) -> bool:
    return url.startswith(HA_SCHEMES)


def parse_redis_url(url: str) -> RedisEndpoint:
    """Parse a Sentinel or Cluster URL; `ValueError` names what is wrong, never the password."""
    for scheme in HA_SCHEMES:
        if url.startswith(scheme):
            break
    else:
        raise ValueError("not a redis(s)+sentinel:// or redis(s)+cluster:// URL")
    kind: Literal["sentinel", "cluster"] = "sentinel" if "sentinel" in scheme else "cluster"
    rest, _, query = url[len(scheme) :].partition("?")
    if "#" in url:
        raise ValueError(f"{kind} URL: fragments are not supported")
    tls = _tls_options(query, kind) if scheme.startswith("rediss") else None
    if tls is None and query:
        raise ValueError(f"{kind} URL: query strings are only for TLS (rediss+{kind}://)")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    nodes = tuple(_node(part, kind) for part in hosts.split(","))
    segments = [s for s in path.split("/") if s] if path else []
    if kind == "cluster":
        if segments:
            raise ValueError("cluster URL: a Redis Cluster has only database 0; drop the path")
        return RedisEndpoint(kind, nodes, username=username, password=password, tls=tls)
    if not segments or len(segments) > 2:
        raise ValueError("sentinel URL: the path must be /service_name or /service_name/db")
    service = unquote(segments[0])
    if not _SERVICE.fullmatch(service):
        raise ValueError("sentinel URL: service_name must match [A-Za-z0-9._-]{1,128}")
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise ValueError("sentinel URL: db must be a number")
        db = int(segments[1])
    return RedisEndpoint(kind, nodes, service, db, username, password, tls)


def _tls_options(query: str, kind: str) -> dict[str, str | bool]:
    options: dict[str, str | bool] = {}
    for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if name in _TLS_PATHS:
            if not value:
                raise ValueError(f"{kind} URL: {name} needs a file path")
            options[name] = value
        elif name == "ssl_cert_reqs":
            if value not in _CERT_REQS:
                raise ValueError(f"{kind} URL: ssl_cert_reqs must be one of {_CERT_REQS}")
            options[name] = value
        elif name == "ssl_check_hostname":
            if value not in ("true", "false"):
                raise ValueError(f"{kind} URL: ssl_check_hostname must be true or false")
            options[name] = value == "true"
        else:
            raise ValueError(f"{kind} URL: unknown query parameter {name[:40]!r}")
    return options


def tls_kwargs(endpoint: RedisEndpoint) -> dict[str, Any]:
    """redis-py connection options for the endpoint's transport: `ssl=True` and the
    `ssl_*` options for TLS, nothing for plain TCP."""
    if endpoint.tls is None:
        return {}
    return {"ssl": True, **endpoint.tls}


def _node(text: str, kind: Literal["sentinel", "cluster"]) -> tuple[str, int]:
    match = _HOST_PORT.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{kind} URL: {text!r} is not host[:port]")
    port = int(match["port"]) if match["port"] else _DEFAULT_PORT[kind]
    if not 0 < port < 65536:
        raise ValueError(f"{kind} URL: port {port} out of range")
    return (match["v6"] or match["host"], port)


class SentinelMasterRedis(aioredis.Redis):
    """The client of a Sentinel-monitored master. Closing it also closes its connections
    to the sentinels, which redis-py leaves open otherwise."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        pool = self.connection_pool
        await super().aclose(close_connection_pool)
        if isinstance(pool, SentinelConnectionPool):
            await pool.sentinel_manager.aclose()


class _InitialisingClusterPubSub(ClusterPubSub):
    """redis-py's cluster pub/sub looks the channel's slot up in the client's slot map,
    which is empty until the client's first command (a `KeyError`, not a `RedisError`):
    learn the cluster first. `initialize()` is a no-op once the map is current."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        await self.cluster.initialize()
        return await super().execute_command(*args, **kwargs)


class BrokerRedisCluster(aioredis.RedisCluster):
    """`RedisCluster` whose pub/sub works as the broker's first command."""

    def pubsub(
        self,
        node: ClusterNode | None = None,
        host: str | None = None,
        port: int | None = None,
        **kwargs: Any,
    ) -> ClusterPubSub:
        return _InitialisingClusterPubSub(self, node=node, host=host, port=port, **kwargs)


def connect_ha(url: str, *, client_name: str) -> RedisClient:
    """A client for a Sentinel or Cluster URL; nothing is contacted until the first command."""
    endpoint = parse_redis_url(url)
    common: dict[str, Any] = {
        "socket_timeout": _SOCKET_TIMEOUT,
        "socket_connect_timeout": _SOCKET_TIMEOUT,
        "health_check_interval": _HEALTH_CHECK_INTERVAL,
        "client_name": client_name,
        "username": endpoint.username,
        "password": endpoint.password,
        "decode_responses": False,
        "retry": Retry(_FAILOVER_BACKOFF, _FAILOVER_RETRY_COUNT),
        **tls_kwargs(endpoint),
    }
    if endpoint.kind == "cluster":
        return BrokerRedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in endpoint.nodes],
            # A slot whose master is gone answers CLUSTERDOWN until its replica takes
            # over; other slots keep working meanwhile.
            require_full_coverage=False,
            **common,
        )
    assert endpoint.service_name is not None
    # redis-py leaves Sentinel.__init__ unannotated.
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(endpoint.nodes),
        sentinel_kwargs={
            "socket_timeout": _SOCKET_TIMEOUT,
            "socket_connect_timeout": _SOCKET_TIMEOUT,
            "client_name": client_name,
            # rediss+sentinel: the sentinels are asked over TLS too.
            **tls_kwargs(endpoint),
        },
    )
    master: SentinelMasterRedis = sentinel.master_for(
        endpoint.service_name, redis_class=SentinelMasterRedis, db=endpoint.db, **common
    )
    return master
