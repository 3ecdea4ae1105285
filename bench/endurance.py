"""Longer runs: the soak (one worker's memory under load for minutes) and several
workers behind one port (throughput per worker, and `/metrics` counting them all)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.load import LoadResult, Target, wrk_load
from bench.procinfo import BrokerProcesses
from bench.promtext import sample_total
from bench.scenarios import MemorySampler

MIB = 2**20
RSS_LIMIT = 80 * MIB
# A leak of one small object per request (tens of bytes) at ~1,000 requests/s is tens of
# MiB in 10 minutes; allocator arenas and bounded caches settling move RSS by well under
# 1 MiB once the first minute is over. 2 MiB per 10 minutes separates the two.
GROWTH_LIMIT_MIB = 2.0
TOKEN_ROUTE = "/v1/realms/{realm}/token"
REQUESTS_METRIC = "atlas_broker_http_request_duration_seconds_count"
ISSUED_METRIC = "atlas_broker_token_requests_total"


def growth_per_ten_minutes(samples: list[tuple[float, int]], *, settle: float) -> float | None:
    """MiB per 10 minutes: the least-squares slope of RSS over the samples taken at or
    after `settle` seconds (None with fewer than two of them)."""
    kept = [(t, rss) for t, rss in samples if t >= settle]
    if len(kept) < 2:
        return None
    mean_t = sum(t for t, _ in kept) / len(kept)
    mean_rss = sum(rss for _, rss in kept) / len(kept)
    spread = sum((t - mean_t) ** 2 for t, _ in kept)
    if spread == 0:
        return None
    slope = sum((t - mean_t) * (rss - mean_rss) for t, rss in kept) / spread  # bytes/s
    return slope * 600 / MIB


# -- soak -------------------------------------------------------------------------------


@dataclass
class SoakResult:
    seconds: float
    interval: float
    settle: float  # samples before this are left out of the slope
    samples: list[tuple[float, int]]  # (seconds since the load began, worker RSS bytes)
    load: LoadResult

    @property
    def start_rss(self) -> int:
        return self.samples[0][1]

    @property
    def peak_rss(self) -> int:
        return max(rss for _, rss in self.samples)

    @property
    def end_rss(self) -> int:
        return self.samples[-1][1]

    @property
    def growth_mib(self) -> float | None:
        return growth_per_ten_minutes(self.samples, settle=self.settle)

    @property
    def bytes_per_request(self) -> float | None:
        growth = self.growth_mib
        if growth is None or self.load.rps <= 0:
            return None
        return growth * MIB / 600 / self.load.rps


async def soak(
    target: Target,
    processes: BrokerProcesses,
    *,
    seconds: int,
    connections: int,
    warmup: int,
    workdir: Path,
) -> SoakResult:
    """`warmup` seconds of load, then `seconds` more while the worker's RSS is sampled
    every few seconds (the first sample is the start, after the warm-up)."""
    await wrk_load(target, connections=connections, duration=warmup, workdir=workdir)
    interval = 5.0 if seconds >= 120 else 1.0
    settle = 60.0 if seconds >= 240 else seconds / 4
    samples: list[tuple[float, int]] = []
    stop = asyncio.Event()

    async def sample(began: float) -> None:
        while not stop.is_set():
            rss = processes.worker_rss()
            if rss:
                samples.append((time.perf_counter() - began, rss[0]))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    sampler = asyncio.create_task(sample(time.perf_counter()))
    try:
        load = await wrk_load(target, connections=connections, duration=seconds, workdir=workdir)
    finally:
        stop.set()
        await sampler
    return SoakResult(float(seconds), interval, settle, samples, load)


# -- several workers ----------------------------------------------------------------------


@dataclass
class WorkersResult:
    workers: int
    connections: int
    load: LoadResult
    warmups: int  # token-route requests made before the load
    scrapes: list[float]  # token-route HTTP requests counted by /metrics, one per scrape
    issued: list[float]  # tokens issued for the realm by /metrics, one per scrape
    peak_worker_rss: list[int] = field(default_factory=list)

    @property
    def expected(self) -> int:
        return self.warmups + self.load.requests

    @property
    def counted(self) -> float:
        return max(self.scrapes) if self.scrapes else 0.0

    @property
    def covers_server(self) -> bool:
        """Every scrape (whichever worker answered) counts the warm-ups and every request
        wrk completed, and at most the requests in flight when wrk stopped beyond that."""
        return bool(self.scrapes) and all(
            self.expected <= n <= self.expected + self.connections for n in self.scrapes
        )


async def wait_for_workers(pid: int, count: int, *, within: float = 30) -> BrokerProcesses:
    """The broker's processes once `count` workers are up (or `within` seconds passed)."""
    deadline = time.monotonic() + within
    while True:
        processes = BrokerProcesses.of(pid)
        if len(processes.workers) >= count or time.monotonic() > deadline:
            return processes
        await asyncio.sleep(0.1)


async def workers_run(
    target: Target,
    metrics_url: str,
    realm: str,
    processes: BrokerProcesses,
    *,
    connections: int,
    seconds: float,
    workdir: Path,
    scrapes: int = 4,
) -> WorkersResult:
    """Warm every worker's memory cache (one request per new connection, so the kernel
    spreads them), run wrk on the token route, then scrape `/metrics` several times, each
    on a new connection (any worker may answer)."""
    workers = len(processes.serving())
    warmups = 4 * workers
    for _ in range(warmups):
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(target.url, headers=target.headers)
            response.raise_for_status()
    sampler = MemorySampler(processes)
    load = await sampler.during(
        wrk_load(target, connections=connections, duration=seconds, workdir=workdir)
    )
    await asyncio.sleep(0.5)  # requests still in flight when wrk stopped finish
    counts, issued = [], []
    for _ in range(scrapes):
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(metrics_url)
            response.raise_for_status()
        counts.append(sample_total(response.text, REQUESTS_METRIC, route=TOKEN_ROUTE))
        issued.append(sample_total(response.text, ISSUED_METRIC, realm=realm, outcome="issued"))
    return WorkersResult(
        workers, connections, load, warmups, counts, issued, sampler.peak_worker_rss
    )
