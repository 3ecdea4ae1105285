"""The one builder of a local stack: OpenBao in dev mode, Redis, the development IdP, a
caller policy, realms seeded in both, and broker processes started on demand.

`broker dev`, the test suite (tests/stack.py) and the benchmarks (bench/stack.py) all
build their stacks from these pieces; each adds only what it alone needs (a leak watch,
a worker count). Everything binds 127.0.0.1 on free ports unless a port is named.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from atlas_broker_dev.processes import ManagedProcess
from atlas_broker_dev.servers import (
    BrokerServer,
    DevIdP,
    OpenBao,
    RedisServer,
    start_broker,
    start_dev_idp,
    start_openbao,
    start_redis,
)
from broker.core.policy import hash_key


@dataclass(frozen=True)
class Caller:
    """A policy entry; the key itself stays here, the file holds its SHA-256."""

    name: str
    key: str = field(repr=False)
    realms: Sequence[str] = ()
    roles: Sequence[str] = ()


def write_policy(path: Path, callers: Iterable[Caller]) -> Path:
    """Write the caller policy the brokers of this stack read."""
    entries: list[dict[str, Any]] = []
    for caller in callers:
        entry: dict[str, Any] = {"name": caller.name, "api_key_sha256": hash_key(caller.key)}
        if caller.realms:
            entry["realms"] = list(caller.realms)
        if caller.roles:
            entry["roles"] = list(caller.roles)
        entries.append(entry)
    path.write_text(yaml.safe_dump({"callers": entries}, sort_keys=False))
    return path


@dataclass
class Realm:
    name: str
    client_id: str
    client_secret: str = field(repr=False)


@dataclass
class Servers:
    """The long-lived servers of a stack; `redis` is None when the stack uses a Redis it
    did not start (or the embedded memory store)."""

    openbao: OpenBao
    idp: DevIdP
    redis: RedisServer | None = None

    def stop(self) -> None:
        for process in (self.idp.process, self.openbao.process):
            with contextlib.suppress(Exception):
                process.stop()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.process.stop()


def start_servers(log_dir: Path, *, redis: bool = True, root_token: str | None = None) -> Servers:
    """OpenBao, the development IdP and (with `redis`) a Redis server, all on free ports."""
    started: list[ManagedProcess] = []
    try:
        openbao = start_openbao(log_dir, root_token=root_token or secrets.token_urlsafe(24))
        started.append(openbao.process)
        redis_server = start_redis(log_dir) if redis else None
        if redis_server is not None:
            started.append(redis_server.process)
        idp = start_dev_idp(log_dir)
        return Servers(openbao, idp, redis_server)
    except BaseException:
        for process in reversed(started):
            with contextlib.suppress(Exception):
                process.stop()
        raise


class LocalStack:
    """The servers plus one policy file; realms and brokers are added as needed, and
    `close()` stops the brokers it started (the servers belong to whoever started them)."""

    def __init__(
        self,
        *,
        log_dir: Path,
        openbao: OpenBao,
        idp: DevIdP,
        redis_url: str,
        policy_file: Path,
        key_prefix: str = "atlas-dev",
    ) -> None:
        self.log_dir = log_dir
        self.openbao = openbao
        self.idp = idp
        self.redis_url = redis_url
        self.policy_file = policy_file
        self.key_prefix = key_prefix
        self.processes: list[ManagedProcess] = []

    # -- realms -----------------------------------------------------------------------

    def add_realm(
        self,
        name: str,
        *,
        client_id: str,
        in_vault: bool = True,
        scopes: Sequence[str] | None = None,
        vault_fields: Mapping[str, str] | None = None,
    ) -> Realm:
        """Realm `name` with a new client secret, known to the IdP (and to OpenBao).

        `scopes` are the scopes the IdP lets the client request (None: any);
        `vault_fields` go into the realm's secret beside the id and secret.
        """
        realm = Realm(name, client_id, secrets.token_urlsafe(24))
        client: dict[str, Any] = {"client_secret": realm.client_secret}
        if scopes is not None:
            client["scopes"] = list(scopes)
        self.idp_control("PUT", f"/realms/{realm.name}/clients/{realm.client_id}", json=client)
        if in_vault:
            self.openbao.write_realm(
                realm.name,
                {
                    "client_id": realm.client_id,
                    "client_secret": realm.client_secret,
                    **(vault_fields or {}),
                },
            )
        return realm

    def new_realm(
        self,
        prefix: str = "realm",
        *,
        client_id: str | None = None,
        in_vault: bool = True,
        scopes: Sequence[str] | None = None,
        vault_fields: Mapping[str, str] | None = None,
    ) -> Realm:
        """A realm no one has used yet: `prefix` and a random suffix."""
        return self.add_realm(
            f"{prefix}-{uuid.uuid4().hex[:8]}",
            client_id=client_id or f"atlas-{prefix}",
            in_vault=in_vault,
            scopes=scopes,
            vault_fields=vault_fields,
        )

    # -- the development IdP ----------------------------------------------------------

    def idp_control(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.idp.control(method, path, **kwargs)

    def idp_requests(self, realm: str) -> int:
        return self.idp.token_requests(realm)

    def set_token_lifetime(self, seconds: int) -> None:
        self.idp.set_token_lifetime(seconds)

    @contextlib.contextmanager
    def token_lifetime(self, seconds: int) -> Iterator[None]:
        """The development IdP issues tokens living `seconds` until the block ends."""
        self.idp.set_token_lifetime(seconds)
        try:
            yield
        finally:
            self.idp.set_token_lifetime(3600)

    def set_fault(self, realm: str, mode: str, **extra: Any) -> None:
        self.idp_control("PUT", "/faults", json={"mode": mode, "realm": realm, **extra})

    # -- brokers ----------------------------------------------------------------------

    def broker_env(self, **overrides: str) -> dict[str, str]:
        """A broker's settings for this stack, with a key prefix of its own (so its own
        Redis namespace) unless `overrides` name one."""
        env = {
            "BROKER_VAULT_ADDR": self.openbao.addr,
            "BROKER_VAULT_TOKEN": self.openbao.root_token,
            "BROKER_IDP_URL": self.idp.url,
            "BROKER_REDIS_URL": self.redis_url,
            "BROKER_KEY_PREFIX": f"{self.key_prefix}-{uuid.uuid4().hex[:8]}",
            "BROKER_POLICY_FILE": str(self.policy_file),
        }
        env.update(overrides)
        return env

    def start_broker(
        self, *, name: str = "broker", port: int | None = None, python: str = "", **env: str
    ) -> BrokerServer:
        """A broker of this stack; `port` None picks a free one, a taken one is refused.
        `python`: the interpreter of another installation of the broker (a benchmark's
        baseline), else this one's."""
        return self._start(name, self.broker_env(**env), port, python or sys.executable)

    def start_brokers(self, count: int, **env: str) -> list[BrokerServer]:
        """`count` replicas sharing one key prefix (so one Redis namespace)."""
        shared = self.broker_env(**env)
        return [self._start(f"broker-{i}", shared, None) for i in range(count)]

    def _start(
        self, name: str, env: Mapping[str, str], port: int | None, python: str = sys.executable
    ) -> BrokerServer:
        server = start_broker(self.log_dir, env=env, name=name, port=port, python=python)
        self.processes.append(server.process)
        return server

    def close(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(Exception):
                process.stop()
        self.processes.clear()
