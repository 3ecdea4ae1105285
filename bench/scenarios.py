"""The measurements: hot path, stampede, refresh-ahead and footprint; the forward proxy
against the API called directly, and the gateway route against the token route."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import httpx

from atlas_broker_dev.processes import ManagedProcess, free_port, http_ok
from bench.load import (
    LoadResult,
    Summary,
    Target,
    percentile,
    python_load,
    single_connection_clients,
    wrk_load,
)
from bench.procinfo import BrokerProcesses
from bench.stack import CLIENT_ID, BenchStack, Realm

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent

# -- hot path ---------------------------------------------------------------------------


def hot_path_targets(
    stack: BenchStack, broker_url: str, realm: Realm, *, limits: list[LimitApp] | None = None
) -> list[Target]:
    """The broker's cached token (token route and gateway route), the broker refusing a
    wrong key (a 401 must cost no more than a cached 200), OpenBao's KV v2 read of the same
    realm's secret, the development IdP's token endpoint for the same realm, and the
    framework limits answering the same bytes as the token route."""
    basic = base64.b64encode(f"{CLIENT_ID}:{realm.client_secret}".encode()).decode()
    caller = {"Authorization": f"Bearer {stack.caller_key}"}
    token_path = f"/v1/realms/{realm.name}/token"
    return [
        Target("broker", "GET", f"{broker_url}{token_path}", caller),
        Target("broker-gateway", "GET", f"{broker_url}/v1/realms/{realm.name}/gateway", caller),
        Target(
            "broker-401",
            "GET",
            f"{broker_url}{token_path}",
            {"Authorization": "Bearer atb_" + "0" * 43},  # the key format, known to no one
        ),
        Target(
            "openbao",
            "GET",
            f"{stack.openbao.addr}/v1/secret/data/atlas/realms/{realm.name}",
            {"X-Vault-Token": stack.openbao.root_token},
        ),
        Target(
            "idp",
            "POST",
            f"{stack.idp.url}/auth/realms/{realm.name}/protocol/openid-connect/token",
            {
                "Authorization": f"Basic {basic}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
            b"grant_type=client_credentials",
        ),
        *(Target(app.name, "GET", f"{app.url}{token_path}", caller) for app in limits or []),
    ]


# Response headers the server writes itself, not the app.
_SERVER_HEADERS = frozenset({"date", "server", "content-length", "transfer-encoding"})
LIMIT_APPS = (("raw", "raw asgi"), ("fastapi", "bare fastapi"))


@dataclass
class LimitApp:
    name: str
    url: str
    process: ManagedProcess


def start_limit_apps(stack: BenchStack, sample: httpx.Response) -> list[LimitApp]:
    """`bench.limit_apps` raw and fastapi, each answering `sample`'s body and headers (a
    cached-token response of this run's broker), on one uvicorn worker each."""
    body_file = stack.workdir / "limit-body.json"  # holds a token: private to the run
    fd = os.open(body_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(sample.content)
    header_args = [
        arg
        for name, value in sample.headers.multi_items()
        if name.lower() not in _SERVER_HEADERS
        for arg in ("--header", f"{name}: {value}")
    ]
    apps = []
    for kind, name in LIMIT_APPS:
        port = free_port()
        argv = [sys.executable, "-m", "bench.limit_apps", kind, "--port", str(port)]
        process = ManagedProcess(
            f"limit-{kind}",
            [*argv, "--body-file", str(body_file), *header_args],
            log_dir=stack.workdir,
            env=dict(os.environ),
            cwd=ROOT,
        )
        stack.processes.append(process.start())
        url = f"http://127.0.0.1:{port}"
        process.wait_until(http_ok(f"{url}/v1/realms/any/token"))
        apps.append(LimitApp(name, url, process))
    return apps


def forward_targets(
    stack: BenchStack, broker_url: str, realm: Realm, *, api_url: str, token: str
) -> list[Target]:
    """Side by side: the API stand-in called directly with a token, the same call through
    the broker's forward proxy, the token route and the gateway route (both on a cached
    token)."""
    caller = {"Authorization": f"Bearer {stack.caller_key}"}
    realm_url = f"{broker_url}/v1/realms/{realm.name}"
    return [
        Target("api direct", "GET", f"{api_url}/api/v1/ping", {"Authorization": f"Bearer {token}"}),
        Target("forward", "GET", f"{realm_url}/forward/api/v1/ping", caller),
        Target("token route", "GET", f"{realm_url}/token", caller),
        Target("gateway", "GET", f"{realm_url}/gateway", caller),
    ]


@dataclass
class MemorySampler:
    """Highest resident memory of each serving broker process seen while sampling."""

    processes: BrokerProcesses
    peak_worker_rss: list[int] = field(default_factory=list)

    async def during(self, work: Awaitable[T]) -> T:
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                rss = self.processes.worker_rss()
                if len(self.peak_worker_rss) < len(rss):
                    self.peak_worker_rss += [0] * (len(rss) - len(self.peak_worker_rss))
                for i, value in enumerate(rss):
                    self.peak_worker_rss[i] = max(self.peak_worker_rss[i], value)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.2)

        sampler = asyncio.create_task(sample())
        try:
            return await work
        finally:
            stop.set()
            await sampler


async def load_once(
    target: Target, *, generator: str, connections: int, duration: float, workdir: Path
) -> LoadResult:
    if generator == "wrk":
        return await wrk_load(target, connections=connections, duration=duration, workdir=workdir)
    return await python_load(target, connections=connections, duration=duration)


async def hot_path(
    targets: list[Target],
    *,
    generator: str,
    connections: int,
    duration: float,
    rounds: int,
    workdir: Path,
    sampler: MemorySampler,
) -> list[Summary]:
    """Rounds A B C A B C …, after one short warm-up pass of each target."""

    async def load(target: Target, seconds: float) -> LoadResult:
        return await load_once(
            target, generator=generator, connections=connections, duration=seconds, workdir=workdir
        )

    for target in targets:
        await load(target, min(1.0, duration))
    results: dict[str, list[LoadResult]] = {t.name: [] for t in targets}
    for _ in range(rounds):
        for target in targets:
            run = load(target, duration)
            result = await (sampler.during(run) if target.name == "broker" else run)
            results[target.name].append(result)
    return [Summary(name, generator, rounds) for name, rounds in results.items()]


# -- stampede ---------------------------------------------------------------------------


@dataclass
class StampedeRun:
    callers: int
    ok: int
    idp_requests: int
    distinct_tokens: int
    seconds: float


async def stampede(stack: BenchStack, urls: list[str], *, callers: int) -> StampedeRun:
    """`callers` concurrent first requests for a new realm, spread over `urls`, each on its
    own connection; the time runs until the last caller has its token."""
    realm = stack.new_realm("stampede")
    headers = {"Authorization": f"Bearer {stack.caller_key}"}
    clients = single_connection_clients(callers, timeout=60)

    async def call(i: int) -> str | None:
        url = f"{urls[i % len(urls)]}/v1/realms/{realm.name}/token"
        try:
            response = await clients[i].get(url, headers=headers)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        token: str = response.json()["access_token"]
        return token

    try:
        began = time.perf_counter()
        tokens = await asyncio.gather(*(call(i) for i in range(callers)))
        seconds = time.perf_counter() - began
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    served = [t for t in tokens if t is not None]
    return StampedeRun(
        callers=callers,
        ok=len(served),
        idp_requests=stack.idp_requests(realm.name),
        distinct_tokens=len(set(served)),
        seconds=seconds,
    )


# -- refresh ahead ----------------------------------------------------------------------


@dataclass
class RefreshResult:
    lifetime: int
    skew: int
    refresh_before: int
    seconds: float
    samples: list[tuple[float, float, int]]  # (start, latency ms, status) since t0
    fetches: list[float]  # token.fetched times since t0, the cold fetch first
    idp_requests: int
    window: float  # seconds either side of a background fetch
    steady_p99_ms: float
    steady_count: int
    window_max_ms: float
    window_count: int

    @property
    def failed(self) -> int:
        return sum(1 for _, _, status in self.samples if status != 200)

    @property
    def refreshes(self) -> int:
        return max(0, len(self.fetches) - 1)


def _fetch_times(log: Path, realm: str) -> list[float]:
    times = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if (
            record.get("event") == "token.fetched"
            and record.get("realm") == realm
            and "outcome" in record
        ):
            stamp = datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00"))
            times.append(stamp.timestamp())
    return sorted(times)


async def refresh_ahead(
    stack: BenchStack,
    *,
    lifetime: int,
    lifetimes: int,
    callers: int,
    pace: float,
    window: float = 0.25,
) -> RefreshResult:
    """A paced stream of token requests across several short token lifetimes; latency of
    requests that start within `window` of a background fetch vs all the others."""
    skew, refresh_before = 1, 2
    stack.set_token_lifetime(lifetime)
    server = stack.start_broker(
        name="broker-refresh",
        BROKER_EXPIRY_SKEW=str(skew),
        BROKER_REFRESH_BEFORE=str(refresh_before),
    )
    realm = stack.new_realm("refresh")
    url = f"{server.url}/v1/realms/{realm.name}/token"
    headers = {"Authorization": f"Bearer {stack.caller_key}"}
    samples: list[tuple[float, float, int]] = []
    clients = single_connection_clients(callers)
    try:
        wall0, t0 = time.time(), time.perf_counter()
        first = await clients[0].get(url, params={"min_ttl": 1}, headers=headers)
        samples.append((0.0, (time.perf_counter() - t0) * 1000, first.status_code))
        stop_at = t0 + lifetime * lifetimes

        async def caller(client: httpx.AsyncClient) -> None:
            while (began := time.perf_counter()) < stop_at:
                response = await client.get(url, params={"min_ttl": 1}, headers=headers)
                done = time.perf_counter()
                samples.append((began - t0, (done - began) * 1000, response.status_code))
                await asyncio.sleep(max(0.0, pace - (done - began)))

        await asyncio.gather(*(caller(client) for client in clients))
        seconds = time.perf_counter() - t0
    finally:
        # Stopped before counting: its refresher would otherwise fetch on after the stream.
        server.process.stop()
        stack.processes.remove(server.process)
        stack.set_token_lifetime(3600)
        await asyncio.gather(*(client.aclose() for client in clients))
    idp_requests = stack.idp_requests(realm.name)
    fetches = [t - wall0 for t in _fetch_times(server.process.log_path, realm.name)]
    background = fetches[1:]

    def in_window(start: float) -> bool:
        return any(abs(start - f) <= window for f in background)

    steady = sorted(lat for start, lat, _ in samples[1:] if not in_window(start))
    during = [lat for start, lat, _ in samples[1:] if in_window(start)]
    return RefreshResult(
        lifetime=lifetime,
        skew=skew,
        refresh_before=refresh_before,
        seconds=seconds,
        samples=samples,
        fetches=fetches,
        idp_requests=idp_requests,
        window=window,
        steady_p99_ms=percentile(steady, 0.99),
        steady_count=len(steady),
        window_max_ms=max(during) if during else float("nan"),
        window_count=len(during),
    )


# -- footprint --------------------------------------------------------------------------


def startup_seconds(stack: BenchStack, *, attempts: int) -> list[float]:
    """Process start to the first `/healthz` 200, for fresh broker processes."""
    times = []
    for i in range(attempts):
        port = free_port()
        env = {**os.environ, **stack.broker_env(), "BROKER_HOST": "127.0.0.1"}
        env["BROKER_PORT"] = str(port)
        process = ManagedProcess(
            f"broker-startup-{i}",
            [sys.executable, "-m", "broker", "serve"],
            log_dir=stack.workdir,
            env=env,
        )
        began = time.perf_counter()
        process.start()
        try:
            deadline = began + 60
            with httpx.Client(timeout=1) as client:
                while time.perf_counter() < deadline:
                    try:
                        if client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                            times.append(time.perf_counter() - began)
                            break
                    except httpx.HTTPError:
                        pass
                    if not process.running:
                        raise RuntimeError(f"broker exited at start-up:\n{process.log_tail()}")
                    time.sleep(0.01)
        finally:
            process.stop()
    return times


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
