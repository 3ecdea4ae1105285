"""The benchmark's own stack: OpenBao, Redis, the development IdP and broker processes,
with one realm seeded everywhere and one caller allowed every realm.

Everything binds 127.0.0.1 on free ports and lives in one temporary directory; the
secrets are made up per run and never printed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Iterator
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

CLIENT_ID = "atlas-bench"


@dataclass
class Realm:
    name: str
    client_secret: str = field(repr=False)


@dataclass
class BenchStack:
    workdir: Path
    openbao: OpenBao
    redis: RedisServer
    idp: DevIdP
    caller_key: str = field(repr=False)
    policy_file: Path
    workers: int
    processes: list[ManagedProcess] = field(default_factory=list)

    # -- realms -------------------------------------------------------------------------

    def new_realm(self, prefix: str) -> Realm:
        """A realm known to the IdP and to OpenBao, unused so far."""
        realm = Realm(f"{prefix}-{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(24))
        self.idp_control(
            "PUT",
            f"/realms/{realm.name}/clients/{CLIENT_ID}",
            json={"client_secret": realm.client_secret},
        )
        self.openbao.write_realm(
            realm.name, {"client_id": CLIENT_ID, "client_secret": realm.client_secret}
        )
        return realm

    def idp_control(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.idp.control(method, path, **kwargs)

    def idp_requests(self, realm: str) -> int:
        return self.idp.token_requests(realm)

    def set_token_lifetime(self, seconds: int) -> None:
        self.idp.set_token_lifetime(seconds)

    # -- brokers ------------------------------------------------------------------------

    def broker_env(self, **overrides: str) -> dict[str, str]:
        env = {
            "BROKER_VAULT_ADDR": self.openbao.addr,
            "BROKER_VAULT_TOKEN": self.openbao.root_token,
            "BROKER_IDP_URL": self.idp.url,
            "BROKER_REDIS_URL": self.redis.url,
            "BROKER_KEY_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
            "BROKER_POLICY_FILE": str(self.policy_file),
            "BROKER_WORKERS": str(self.workers),
        }
        env.update(overrides)
        return env

    def start_broker(self, *, name: str = "broker", **env: str) -> BrokerServer:
        server = start_broker(self.workdir, env=self.broker_env(**env), name=name)
        self.processes.append(server.process)
        return server

    def close(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(Exception):
                process.stop()
        self.processes.clear()


@contextlib.contextmanager
def bench_stack(*, workers: int, keep: bool = False) -> Iterator[BenchStack]:
    """Start OpenBao, Redis and the IdP; yield the stack; stop everything and (unless
    `keep`) delete the working directory with its logs and made-up secrets."""
    workdir = Path(tempfile.mkdtemp(prefix="atlas-bench-"))
    os.chmod(workdir, 0o700)
    started: list[ManagedProcess] = []
    stack: BenchStack | None = None
    try:
        bao = start_openbao(workdir, root_token=secrets.token_urlsafe(24))
        started.append(bao.process)
        redis_server = start_redis(workdir)
        started.append(redis_server.process)
        idp_config = workdir / "idp.yaml"
        idp_config.write_text(yaml.safe_dump({"token_lifetime": 3600, "realms": {}}))
        idp = start_dev_idp(workdir, config=idp_config)
        started.append(idp.process)
        caller_key = secrets.token_urlsafe(32)
        policy_file = workdir / "policy.yaml"
        policy_file.write_text(
            yaml.safe_dump(
                {
                    "callers": [
                        {
                            "name": "bench",
                            "api_key_sha256": hash_key(caller_key),
                            "realms": ["*"],
                        }
                    ]
                }
            )
        )
        stack = BenchStack(
            workdir, bao, redis_server, idp, caller_key, policy_file, workers=workers
        )
        yield stack
    finally:
        if stack is not None:
            stack.close()
        for process in reversed(started):
            with contextlib.suppress(Exception):
                process.stop()
        if keep:
            print(f"bench: logs kept in {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
