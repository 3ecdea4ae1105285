"""Redis Cluster and Redis Sentinel set-ups on loopback, for tests and benchmarks.

Both are built from plain `redis-server` processes and configured with redis-py (no
`redis-cli` needed): a cluster of masters with one replica each, or a master, a replica
and three sentinels. Each can fail over its master while the broker runs against it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis

from atlas_broker_dev.processes import ManagedProcess, StartupError, free_port, tcp_open
from atlas_broker_dev.servers import redis_server_argv

_SLOTS = 16384


def _wait(condition: Callable[[], bool], *, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise StartupError(f"{what}: not reached after {timeout:.0f} s")


def _cluster_state(client: redis.Redis) -> str:
    raw = _command(client, "CLUSTER", "INFO")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    for line in text.splitlines():
        if line.startswith("cluster_state:"):
            return line.partition(":")[2].strip()
    return "unknown"


def _known_nodes(client: redis.Redis) -> int:
    raw = _command(client, "CLUSTER", "NODES")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return len([line for line in text.splitlines() if line.strip()])


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)


def _command(client: redis.Redis, *args: str | int) -> Any:
    """One raw command; redis-py leaves `execute_command` unannotated."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _master_port(sentinel: RedisNode, service: str) -> int:
    address = cast(tuple[str, int], sentinel.client().sentinel_get_master_addr_by_name(service))
    return int(address[1])


@dataclass
class RedisNode:
    process: ManagedProcess
    port: int
    bus_port: int | None = None

    def client(self) -> redis.Redis:
        return _client(self.port)

    def kill(self) -> None:
        """Crash the node: SIGKILL, no shutdown handshake."""
        if self.process.proc is not None and self.process.running:
            self.process.proc.kill()
            self.process.proc.wait(timeout=5)


def _start_node(
    log_dir: Path, name: str, extra: Sequence[str], *, bus_port: int | None = None
) -> RedisNode:
    port = free_port()
    process = ManagedProcess(
        name, redis_server_argv(log_dir, port, *extra), log_dir=log_dir
    ).start()
    process.wait_until(tcp_open(port))
    return RedisNode(process, port, bus_port)


# -- Redis Cluster ----------------------------------------------------------------------


@dataclass
class RedisClusterSetup:
    """`masters` masters owning equal slot ranges, each with `replicas[i]` as its replica."""

    masters: list[RedisNode]
    replicas: list[RedisNode]
    killed: list[RedisNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in self.masters)
        return f"redis+cluster://{seeds}"

    def live_nodes(self) -> list[RedisNode]:
        return [n for n in (*self.masters, *self.replicas) if n not in self.killed]

    def master_of(self, key: str) -> RedisNode:
        """The node currently serving `key`'s slot as master."""
        probe = self.live_nodes()[0].client()
        slot = int(_command(probe, "CLUSTER", "KEYSLOT", key))
        ports = {node.port: node for node in self.live_nodes()}
        for start, end, owner, *_ in _command(probe, "CLUSTER", "SLOTS"):
            if start <= slot <= end and int(owner[1]) in ports:
                return ports[int(owner[1])]
        raise LookupError(f"no live master serves slot {slot}")

    def kill_master_of(self, key: str, *, timeout: float = 15.0) -> tuple[RedisNode, RedisNode]:
        """Crash the master serving `key`; return it and the replica that took over once
        the cluster is whole again."""
        master = self.master_of(key)
        replica = self.replicas[self.masters.index(master)]
        master.kill()
        self.killed.append(master)

        def promoted() -> bool:
            role = _command(replica.client(), "ROLE")[0]
            states = [_cluster_state(n.client()) for n in self.live_nodes()]
            return bool(role == b"master" and all(s == "ok" for s in states))

        _wait(promoted, what="replica promoted", timeout=timeout)
        return master, replica

    def stop(self) -> None:
        for node in (*self.replicas, *self.masters):
            node.process.stop()


def start_redis_cluster(
    log_dir: Path, *, masters: int = 3, node_timeout_ms: int = 500, timeout: float = 30.0
) -> RedisClusterSetup:
    """Start `masters` masters and as many replicas and join them into one cluster."""
    nodes = []
    for i in range(masters * 2):
        # The bus port is named explicitly: port + 10000 may be out of range.
        bus_port = free_port()
        nodes.append(
            _start_node(
                log_dir,
                f"redis-cluster-{i}",
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(log_dir / f"redis-cluster-{i}.nodes.conf"),
                    "--cluster-node-timeout",
                    str(node_timeout_ms),
                    "--cluster-port",
                    str(bus_port),
                ],
                bus_port=bus_port,
            )
        )
    setup = RedisClusterSetup(nodes[:masters], nodes[masters:])
    try:
        _form_cluster(setup, timeout=timeout)
    except BaseException:
        setup.stop()
        raise
    return setup


def _form_cluster(setup: RedisClusterSetup, *, timeout: float) -> None:
    count = len(setup.masters)
    for index, master in enumerate(setup.masters):
        client = master.client()
        _command(client, "CLUSTER", "SET-CONFIG-EPOCH", index + 1)
        first, last = index * _SLOTS // count, (index + 1) * _SLOTS // count - 1
        _command(client, "CLUSTER", "ADDSLOTSRANGE", first, last)
    everyone = [*setup.masters, *setup.replicas]
    seed = everyone[0]
    assert seed.bus_port is not None
    for node in everyone[1:]:
        _command(node.client(), "CLUSTER", "MEET", "127.0.0.1", seed.port, seed.bus_port)

    def all_known() -> bool:
        return all(_known_nodes(n.client()) == len(everyone) for n in everyone)

    _wait(all_known, what="cluster nodes meet", timeout=timeout)
    for master, replica in zip(setup.masters, setup.replicas, strict=True):
        master_id = _command(master.client(), "CLUSTER", "MYID").decode()
        _command(replica.client(), "CLUSTER", "REPLICATE", master_id)

    def whole() -> bool:
        if any(_cluster_state(n.client()) != "ok" for n in everyone):
            return False
        return all(
            r.client().info("replication").get("master_link_status") == "up" for r in setup.replicas
        )

    _wait(whole, what="cluster state ok with replicas in sync", timeout=timeout)


# -- Redis Sentinel ---------------------------------------------------------------------


@dataclass
class RedisSentinelSetup:
    """A master, its replica and the sentinels that watch them under `service`."""

    service: str
    master: RedisNode
    replica: RedisNode
    sentinels: list[RedisNode]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def master_port(self) -> int:
        """The master's port as the first sentinel reports it."""
        return _master_port(self.sentinels[0], self.service)

    def kill_master(self, *, timeout: float = 20.0) -> None:
        """Crash the master; return once every sentinel names the promoted replica and it
        answers as master (down-after 1 s, then the sentinels' election)."""
        target = self.replica.port
        self.master.kill()

        def switched() -> bool:
            if any(_master_port(s, self.service) != target for s in self.sentinels):
                return False
            return bool(_command(self.replica.client(), "ROLE")[0] == b"master")

        _wait(switched, what="sentinel failover", timeout=timeout)
        self.master, self.replica = self.replica, self.master

    def stop(self) -> None:
        for node in (*self.sentinels, self.replica, self.master):
            node.process.stop()


def start_redis_sentinel(
    log_dir: Path, *, service: str = "atlas", sentinels: int = 3, timeout: float = 30.0
) -> RedisSentinelSetup:
    """Start a master, one replica and `sentinels` sentinels (quorum: a majority)."""
    started: list[RedisNode] = []
    try:
        master = _start_node(log_dir, "redis-sentinel-master", [])
        started.append(master)
        replica = _start_node(
            log_dir, "redis-sentinel-replica", ["--replicaof", "127.0.0.1", str(master.port)]
        )
        started.append(replica)
        _wait(
            lambda: replica.client().info("replication").get("master_link_status") == "up",
            what="replica in sync",
            timeout=timeout,
        )
        watchers = []
        for i in range(sentinels):
            config = log_dir / f"sentinel-{i}.conf"  # sentinels rewrite their own file
            config.write_text(
                "\n".join(
                    [
                        f"sentinel monitor {service} 127.0.0.1 {master.port} {sentinels // 2 + 1}",
                        f"sentinel down-after-milliseconds {service} 1000",
                        f"sentinel failover-timeout {service} 5000",
                        f"sentinel parallel-syncs {service} 1",
                        "",
                    ]
                )
            )
            # The config file must be redis-server's first argument.
            node = _start_node(log_dir, f"redis-sentinel-{i}", [str(config), "--sentinel"])
            started.append(node)
            watchers.append(node)
        setup = RedisSentinelSetup(service, master, replica, watchers)

        def watching() -> bool:
            for sentinel in watchers:
                state = cast(dict[str, Any], sentinel.client().sentinel_master(service))
                if state["num-other-sentinels"] < sentinels - 1 or state["num-slaves"] < 1:
                    return False
            return True

        _wait(watching, what="sentinels see each other and the replica", timeout=timeout)
        return setup
    except BaseException:
        for node in reversed(started):
            node.process.stop()
        raise
