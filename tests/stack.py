"""The test stack: realms seeded in OpenBao and the development IdP, broker processes,
and the watch that keeps every secret the suite creates out of every log."""

from __future__ import annotations

import contextlib
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx

from atlas_broker_dev.processes import ManagedProcess
from atlas_broker_dev.servers import BrokerServer, DevIdP, OpenBao, RedisServer, start_broker


@dataclass
class CallerKeys:
    LIMITED_REALM: ClassVar[str] = "limited-realm"

    everything: str
    limited: str
    admin: str
    policy_file: Path


class LeakWatch:
    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def add(self, *values: str) -> None:
        self._secrets.update(v for v in values if v)

    def found_in(self, text: str) -> list[str]:
        """The first characters of every watched secret that `text` contains."""
        return [value[:4] for value in self._secrets if value in text]

    def scan(self, root: Path) -> list[str]:
        """Leaks in the output of the broker and the development IdP (OpenBao's dev
        server prints its own root token by design, so its log is not ours to judge),
        and in the audit files and spools the brokers wrote."""
        leaks = []
        paths = [
            path for pattern in ("*.log", "*.jsonl", "*.spool") for path in root.rglob(pattern)
        ]
        for path in paths:
            if path.name.startswith("openbao"):
                continue
            text = path.read_text(errors="replace")
            for value in self._secrets:
                if value in text:
                    leaks.append(f"{path.name} holds a secret starting {value[:4]!r}")
        return leaks


@dataclass
class Realm:
    name: str
    client_id: str
    client_secret: str


def wait_for(predicate: Callable[[], bool], *, timeout: float, message: str) -> None:
    """Poll `predicate` until it holds; fail with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(message)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Stack:
    log_dir: Path
    openbao: OpenBao
    redis: RedisServer
    idp: DevIdP
    keys: CallerKeys
    leak_watch: LeakWatch
    processes: list[ManagedProcess] = field(default_factory=list)

    # -- realms -----------------------------------------------------------------------

    def new_realm(self, prefix: str = "realm", *, in_vault: bool = True) -> Realm:
        """A realm known to the IdP (and Vault), unique to the calling test."""
        realm = Realm(
            f"{prefix}-{uuid.uuid4().hex[:8]}", f"atlas-{prefix}", secrets.token_urlsafe(24)
        )
        self.leak_watch.add(realm.client_secret)
        self.idp_control(
            "PUT",
            f"/realms/{realm.name}/clients/{realm.client_id}",
            json={"client_secret": realm.client_secret},
        )
        if in_vault:
            self.openbao.write_realm(
                realm.name, {"client_id": realm.client_id, "client_secret": realm.client_secret}
            )
        return realm

    def idp_control(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.idp.control(method, path, **kwargs)

    def idp_requests(self, realm: str) -> int:
        return self.idp.token_requests(realm)

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
        env = {
            "BROKER_VAULT_ADDR": self.openbao.addr,
            "BROKER_VAULT_TOKEN": self.openbao.root_token,
            "BROKER_IDP_URL": self.idp.url,
            "BROKER_REDIS_URL": self.redis.url,
            "BROKER_KEY_PREFIX": f"t-{uuid.uuid4().hex[:8]}",
            "BROKER_POLICY_FILE": str(self.keys.policy_file),
            "BROKER_LOG_LEVEL": "info",
            "BROKER_AUDIT_SPOOL_DIR": str(self.log_dir / "spool"),
        }
        env.update(overrides)
        return env

    def start_broker(self, *, name: str = "broker", **env: str) -> BrokerServer:
        server = start_broker(self.log_dir, env=self.broker_env(**env), name=name)
        self.processes.append(server.process)
        return server

    def start_brokers(self, count: int, **env: str) -> list[BrokerServer]:
        """`count` replicas sharing one key prefix (so one Redis namespace)."""
        shared = self.broker_env(**env)
        return [self.start_broker(name=f"broker-{i}", **shared) for i in range(count)]

    def get_token(
        self, url: str, realm: str, key: str | None = None, **params: int
    ) -> httpx.Response:
        """GET /v1/realms/{realm}/token as a caller (by default the one allowed everything)."""
        response = httpx.get(
            f"{url}/v1/realms/{realm}/token",
            params=params,
            headers=bearer(key or self.keys.everything),
            timeout=30,
        )
        self.served_tokens(response)
        return response

    def served_tokens(self, response: httpx.Response) -> None:
        if response.status_code == 200:
            self.leak_watch.add(response.json()["access_token"])

    def audit_events(self, process: ManagedProcess) -> list[dict[str, Any]]:
        """The audit records a broker process wrote (JSON lines with an `event` field
        and an `outcome`, beside the log lines)."""
        events = []
        for line in process.log_path.read_text().splitlines():
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            if "outcome" in record and "event" in record:
                events.append(record)
        return events

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()
