"""Attacker's tools for the security tests: raw sockets to a broker, its memory, a
caller kept asking while an attack runs, and a broker serving HTTPS."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from atlas_broker_dev.processes import ManagedProcess, free_port
from atlas_broker_dev.servers import BrokerServer
from polling import read_until
from stack import Stack


def connect(broker: BrokerServer, *, send_buffer: int | None = None) -> socket.socket:
    host, port = broker.url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if send_buffer is not None:
        # A small send buffer, so what the socket accepts is close to what the broker read.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.connect((host, int(port)))
    return sock


def closed_by_peer(sock: socket.socket, *, wait: float) -> bool:
    """Whether the broker closed the connection (after any answer) within `wait` seconds."""
    sock.settimeout(wait)
    try:
        while chunk := sock.recv(65536):
            del chunk
        return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True


@contextlib.contextmanager
def serving_throughout(broker: BrokerServer) -> Iterator[list[int]]:
    """Asks the broker for `/healthz` over and over while the block runs; the statuses.

    The block starts once one answer came back and ends once one more did after it."""
    statuses: list[int] = []
    answered = threading.Condition()
    done = threading.Event()

    def ask() -> None:
        with httpx.Client(timeout=30) as client:
            while not done.is_set():
                try:
                    status = client.get(f"{broker.url}/healthz").status_code
                except httpx.HTTPError:
                    status = 0
                with answered:
                    statuses.append(status)
                    answered.notify_all()

    worker = threading.Thread(target=ask, daemon=True)
    worker.start()
    with answered:
        answered.wait_for(lambda: len(statuses) > 0, timeout=60)
    try:
        yield statuses
    finally:
        with answered:
            seen = len(statuses)
            answered.wait_for(lambda: len(statuses) > seen, timeout=60)
        done.set()
        worker.join(timeout=60)


def eventually_status(call: Callable[[], httpx.Response], *, attempts: int = 100) -> int:
    """The first status other than 503 `call` gets (the closed connections take a moment
    to be noticed by the broker)."""
    return read_until(
        lambda: call().status_code, lambda status: status != 503, timeout=attempts * 0.05
    )


def rss_bytes(pid: int) -> int:
    """The resident set size of process `pid` (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def start_tls_broker(stack: Stack, ca_file: Path, *, name: str, **env: str) -> BrokerServer:
    """A broker serving HTTPS (BROKER_TLS_* in `env`), ready once `/healthz` answers over
    TLS verified against `ca_file`; stopped with the stack."""
    port = free_port()
    full_env = {
        **os.environ,
        **stack.broker_env(**env),
        "BROKER_HOST": "127.0.0.1",
        "BROKER_PORT": str(port),
    }
    process = ManagedProcess(
        name, [sys.executable, "-m", "broker", "serve"], log_dir=stack.log_dir, env=full_env
    ).start()
    stack.processes.append(process)
    url = f"https://127.0.0.1:{port}"
    context = ssl.create_default_context(cafile=str(ca_file))

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/healthz", verify=context, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    process.wait_until(ready)
    return BrokerServer(process, url)
