"""The test stack: the development distribution's stack builder (realms seeded in OpenBao
and the development IdP, broker processes), plus the watch that keeps every secret the
suite creates out of every log."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx

from atlas_broker_dev.processes import ManagedProcess
from atlas_broker_dev.servers import DevIdP, OpenBao, RedisServer
from atlas_broker_dev.stack import LocalStack, Realm
from polling import wait_for

__all__ = ["CallerKeys", "LeakWatch", "Realm", "Stack", "bearer", "wait_for"]


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


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Stack(LocalStack):
    """The session's servers with the suite's callers; brokers per test (or module)."""

    def __init__(
        self,
        *,
        log_dir: Path,
        openbao: OpenBao,
        redis: RedisServer,
        idp: DevIdP,
        keys: CallerKeys,
        leak_watch: LeakWatch,
    ) -> None:
        super().__init__(
            log_dir=log_dir,
            openbao=openbao,
            idp=idp,
            redis_url=redis.url,
            policy_file=keys.policy_file,
            key_prefix="t",
        )
        self.redis = redis
        self.keys = keys
        self.leak_watch = leak_watch

    def add_realm(
        self,
        name: str,
        *,
        client_id: str,
        in_vault: bool = True,
        scopes: Sequence[str] | None = None,
        vault_fields: Mapping[str, str] | None = None,
    ) -> Realm:
        realm = super().add_realm(
            name, client_id=client_id, in_vault=in_vault, scopes=scopes, vault_fields=vault_fields
        )
        self.leak_watch.add(realm.client_secret)
        return realm

    def broker_env(self, **overrides: str) -> dict[str, str]:
        return super().broker_env(
            **{
                "BROKER_LOG_LEVEL": "info",
                "BROKER_AUDIT_SPOOL_DIR": str(self.log_dir / "spool"),
                **overrides,
            }
        )

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
