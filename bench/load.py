"""Load generators: an async Python one (httpx, runs anywhere) and `wrk` when installed.

Both run a closed loop: `connections` connections, each sending its next request as soon
as the previous one is answered, for a fixed duration. Latency is measured per request
from send to the end of the response body.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import ssl
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


@dataclass(frozen=True)
class Target:
    """One HTTP request to repeat. Headers carry credentials, so they stay out of repr."""

    name: str
    method: str
    url: str
    headers: dict[str, str] = field(repr=False)
    body: bytes | None = None


@dataclass
class LoadResult:
    target: str
    generator: str
    connections: int
    seconds: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    command: str = ""  # the exact wrk command line, for wrk runs

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


def single_connection_clients(count: int, *, timeout: float = 30) -> list[httpx.AsyncClient]:
    """`count` clients of one connection each, sharing one TLS context (building one per
    client costs tens of milliseconds; the targets are plain HTTP on loopback anyway)."""
    tls = ssl.create_default_context()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return [httpx.AsyncClient(limits=limits, timeout=timeout, verify=tls) for _ in range(count)]


async def python_load(target: Target, *, connections: int, duration: float) -> LoadResult:
    """One `httpx.AsyncClient` per connection: httpcore's pool scans every connection it
    holds for each request, so one shared pool of N connections costs O(N) per request
    and caps the generator far below the servers (measured: 506 req/s with 1 connection,
    174 with 32 in one pool)."""
    clients = single_connection_clients(connections)
    latencies: list[float] = []
    errors = 0

    async def one(client: httpx.AsyncClient) -> bool:
        try:
            response = await client.request(
                target.method, target.url, headers=target.headers, content=target.body
            )
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def worker(client: httpx.AsyncClient, stop_at: float) -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            ok = await one(client)
            latencies.append(time.perf_counter() - started)
            if not ok:
                errors += 1

    try:
        # Open every connection before the clock starts.
        await asyncio.gather(*(one(client) for client in clients))
        began = time.perf_counter()
        await asyncio.gather(*(worker(client, began + duration) for client in clients))
        elapsed = time.perf_counter() - began
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    latencies.sort()
    return LoadResult(
        target=target.name,
        generator="python",
        connections=connections,
        seconds=elapsed,
        requests=len(latencies),
        errors=errors,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        max_ms=(latencies[-1] if latencies else float("nan")) * 1000,
    )


# Every wrk command line this process ran, in order (the report lists them).
WRK_COMMANDS: list[str] = []


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


_WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"errors":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\\n',
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout + e.status,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal here


async def wrk_load(
    target: Target, *, connections: int, duration: float, workdir: Path
) -> LoadResult:
    """Run `wrk` (one thread: the machine's other core serves) with a Lua script that sets
    the method, headers and body and prints a JSON summary. The script holds credentials,
    so it is private to the run's directory and removed afterwards."""
    script = workdir / f"wrk-{target.name.replace(' ', '-')}.lua"
    lines = [f"wrk.method = {_lua_string(target.method)}"]
    if target.body is not None:
        lines.append(f"wrk.body = {_lua_string(target.body.decode())}")
    for name, value in target.headers.items():
        lines.append(f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}")
    fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write("\n".join(lines) + "\n" + _WRK_DONE)
    seconds = max(1, round(duration))  # wrk takes whole seconds
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s"]
    argv += ["-s", str(script), target.url]
    WRK_COMMANDS.append(shlex.join(argv))
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await process.communicate()
    finally:
        script.unlink(missing_ok=True)
    summary = next(
        (json.loads(line) for line in out.decode().splitlines() if line.startswith("{")), None
    )
    if process.returncode != 0 or summary is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {err.decode()[-500:]}")
    return LoadResult(
        target=target.name,
        generator="wrk",
        connections=connections,
        seconds=summary["duration_us"] / 1e6,
        requests=summary["requests"],
        errors=summary["errors"],
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        max_ms=summary["max_us"] / 1000,
        command=shlex.join(argv),
    )


@dataclass
class Summary:
    """A target's rounds in one figure each: the median across rounds."""

    target: str
    generator: str
    rounds: list[LoadResult]

    @property
    def rps(self) -> float:
        return statistics.median(r.rps for r in self.rounds)

    @property
    def p50_ms(self) -> float:
        return statistics.median(r.p50_ms for r in self.rounds)

    @property
    def p99_ms(self) -> float:
        return statistics.median(r.p99_ms for r in self.rounds)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.rounds)

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.rounds)
