"""The benchmark report: a summary table for the terminal, `docs/BENCHMARKS.md`, and the
refresh plot (when matplotlib, the `bench` extra, is installed)."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from atlas_broker_dev.servers import find_bao, find_redis_server
from bench.endurance import GROWTH_LIMIT_MIB, RSS_LIMIT, SoakResult, WorkersResult
from bench.load import Summary
from bench.profile import TopFunctions
from bench.scenarios import RefreshResult, StampedeRun, median

NOTES_MARKER = "<!-- Notes below this line are written by hand; bench/run.py keeps them. -->"


@dataclass
class Results:
    command: str
    date: str
    workers: int
    quick: bool
    connections: int
    duration: float
    rounds: int
    hot: dict[str, list[Summary]] = field(default_factory=dict)  # by generator
    stampede: list[StampedeRun] = field(default_factory=list)
    stampede_replicas: int = 3
    refresh: RefreshResult | None = None
    rest_rss: list[int] = field(default_factory=list)
    rest_supervisor_rss: int | None = None
    load_rss: list[int] = field(default_factory=list)
    startup: list[float] = field(default_factory=list)
    forward: list[Summary] = field(default_factory=list)
    plot: Path | None = None
    tree: str = "unknown"  # git commit of the measured tree, and whether it was dirty
    wrk_commands: list[str] = field(default_factory=list)
    soak: SoakResult | None = None
    scale: WorkersResult | None = None  # the several-workers scenario
    profile: TopFunctions | None = None
    profile_note: str = ""  # what was profiled, how


# -- machine ------------------------------------------------------------------------------


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)  # noqa: S603 - fixed argv
    except OSError:
        return "unknown"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def machine() -> list[tuple[str, str]]:
    cpu = "unknown"
    memory = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 1024 / 1024:.0f} GiB"
    system = f"{platform.system()} {platform.release()}"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                system += f", {line.partition('=')[2].strip(chr(34))}"
    return [
        ("CPU", f"{cpu}, {os.cpu_count()} cores (shared, noisy)"),
        ("Memory", memory),
        ("OS", system),
        ("Python", platform.python_version()),
        ("OpenBao", _first_line([find_bao(), "version"]).split(" (")[0]),
        ("Redis", _first_line([find_redis_server(), "--version"]).split(" sha=")[0]),
    ]


# -- targets --------------------------------------------------------------------------------


def _by_name(summaries: list[Summary]) -> dict[str, Summary]:
    return {s.target: s for s in summaries}


@dataclass
class Check:
    target: str
    measured: str
    met: bool | None  # None: not measured, or shown for information (`info`)
    info: bool = False


def _short_of(needed: float, have: float, unit: str) -> str:
    """How far a missed goal is: what is missing, absolute and relative."""
    if have <= 0:
        return ""
    return f"; short by {needed - have:,.0f} {unit} (+{(needed / have - 1) * 100:.0f}% needed)"


def at_least(target: str, value: float, base: float, goal: float, what: str) -> Check:
    """`value` ≥ `goal` x `base` (requests/s), with the distance when missed."""
    ratio = value / base if base > 0 else float("nan")
    met = value >= goal * base
    measured = f"{value:,.0f} vs {base:,.0f} {what} = {ratio:.2f}x (goal ≥ {goal:g}x)"
    if not met:
        measured += _short_of(goal * base, value, "req/s")
    return Check(target, measured, met)


def _at_most_ms(target: str, value: float, limit: float, what: str) -> Check:
    met = value <= limit
    measured = f"{value:.2f} ms vs {limit:.2f} ms {what}"
    if not met:
        measured += f"; {value - limit:.2f} ms over ({value / limit:.2f}x)"
    return Check(target, measured, met)


def _rss_within(target: str, values: list[int]) -> Check:
    worst = max(values)
    measured = ", ".join(_mib(v) for v in values) + f" (limit {_mib(RSS_LIMIT)})"
    if worst > RSS_LIMIT:
        measured += f"; {(worst - RSS_LIMIT) / 2**20:.1f} MiB over"
    return Check(target, measured, worst <= RSS_LIMIT)


BASELINE_ROW = "broker (baseline)"  # bench/run.py --baseline
GATEWAY_RATIO = 0.95  # "at the token route's rate", within the rounds' run-to-run spread


def _hot_checks(generator: str, summaries: list[Summary]) -> list[Check]:
    by = _by_name(summaries)
    broker, bao, idp = by["broker"], by["openbao"], by["idp"]
    tag = f"({generator})"
    found = [
        at_least(
            f"must: cached token ≥ 1x OpenBao KV read, req/s {tag}",
            broker.rps,
            bao.rps,
            1.0,
            "OpenBao",
        ),
        _at_most_ms(
            f"must: cached token p99 ≤ OpenBao p99 {tag}", broker.p99_ms, bao.p99_ms, "OpenBao"
        ),
        at_least(
            f"aim: cached token ≥ 2x OpenBao KV read, req/s {tag}",
            broker.rps,
            bao.rps,
            2.0,
            "OpenBao",
        ),
    ]
    raw, bare = by.get("raw asgi"), by.get("bare fastapi")
    if raw is not None:
        check = at_least(
            f"aim: cached token ≥ 0.5x raw ASGI, req/s {tag}", broker.rps, raw.rps, 0.5, "raw ASGI"
        )
        if bare is not None:
            check.measured += (
                f"; bare FastAPI {bare.rps:,.0f} (broker {broker.rps / bare.rps:.2f}x of it, "
                f"FastAPI {bare.rps / raw.rps:.2f}x of raw)"
            )
        found.append(check)
    gateway = by.get("broker-gateway")
    if gateway is not None:
        found.append(
            at_least(
                f"gateway route at the token route's rate, req/s {tag}",
                gateway.rps,
                broker.rps,
                GATEWAY_RATIO,
                "token route",
            )
        )
    refused = by.get("broker-401")
    if refused is not None:
        found.append(
            at_least(
                f"a refusal (401) at least as fast as a cached 200, req/s {tag}",
                refused.rps,
                broker.rps,
                1.0,
                "cached 200",
            )
        )
    found.append(
        at_least(f"cached token ≥ 5x direct IdP, req/s {tag}", broker.rps, idp.rps, 5.0, "IdP")
    )
    baseline = by.get(BASELINE_ROW)
    if baseline is not None:
        found.append(
            Check(
                f"this tree against the baseline broker (`--baseline`), req/s {tag}",
                f"{broker.rps:,.0f} vs {baseline.rps:,.0f} = {broker.rps / baseline.rps:.2f}x; "
                f"p99 {broker.p99_ms:.2f} ms vs {baseline.p99_ms:.2f} ms",
                None,
                info=True,
            )
        )
    return found


def _endurance_checks(results: Results) -> list[Check]:
    found = []
    if results.load_rss:
        found.append(
            _rss_within("RSS ≤ 80 MiB per worker, peak under the hot-path load", results.load_rss)
        )
    soak = results.soak
    if soak is not None and soak.samples:
        found.append(
            _rss_within(f"soak: RSS ≤ 80 MiB, peak over {soak.seconds:.0f} s", [soak.peak_rss])
        )
        growth = soak.growth_mib
        found.append(
            Check(
                f"soak: RSS growth < {GROWTH_LIMIT_MIB:g} MiB per 10 min",
                "not enough samples"
                if growth is None
                else f"{growth:+.2f} MiB per 10 min (least squares after {soak.settle:.0f} s; "
                f"{_mib(soak.start_rss)} → {_mib(soak.end_rss)})",
                None if growth is None else growth < GROWTH_LIMIT_MIB,
            )
        )
    scale = results.scale
    if scale is not None:
        counted = ", ".join(f"{n:,.0f}" for n in scale.scrapes)
        found.append(
            Check(
                f"{scale.workers} workers: /metrics counts the whole server (token route)",
                f"scrapes report {counted}; expected {scale.warmups} warm-ups + "
                f"{scale.load.requests:,} wrk requests = {scale.expected:,} "
                f"(+ up to {scale.connections} in flight)",
                scale.covers_server,
            )
        )
        if scale.peak_worker_rss:
            found.append(
                _rss_within(
                    f"{scale.workers} workers: RSS ≤ 80 MiB per worker", scale.peak_worker_rss
                )
            )
        single = _single_worker_rps(results)
        per_worker = scale.load.rps / scale.workers
        measured = f"{scale.load.rps:,.0f} req/s in all, {per_worker:,.0f} per worker"
        if single is not None:
            measured += f" vs {single:,.0f} with one worker ({per_worker / single:.2f}x)"
        bao = _wrk_hot_rps(results, "openbao")
        if bao is not None:
            measured += f"; all workers vs OpenBao {scale.load.rps / bao:.2f}x"
        found.append(Check(f"{scale.workers} workers: req/s per worker", measured, None, True))
    return found


def _wrk_hot_rps(results: Results, target: str) -> float | None:
    """A hot-path target's requests/s under wrk (what the workers scenario uses)."""
    summaries = results.hot.get("wrk")
    found = _by_name(summaries).get(target) if summaries else None
    return found.rps if found is not None else None


def _single_worker_rps(results: Results) -> float | None:
    return _wrk_hot_rps(results, "broker") if results.workers == 1 else None


def checks(results: Results) -> list[Check]:
    found: list[Check] = []
    for generator, summaries in results.hot.items():
        found += _hot_checks(generator, summaries)
    found += _endurance_checks(results)
    if results.stampede:
        most = max(run.idp_requests for run in results.stampede)
        found.append(
            Check(
                "one IdP request per realm per lifetime (stampede)",
                f"{most} IdP request(s) at most in {len(results.stampede)} run(s) of "
                f"{results.stampede[0].callers} callers on {results.stampede_replicas} replicas",
                most == 1 and all(r.ok == r.callers for r in results.stampede),
            )
        )
    refresh = results.refresh
    if refresh is not None:
        found.append(
            Check(
                "one IdP request per realm per lifetime (refresh)",
                f"{refresh.idp_requests} IdP requests, {len(refresh.fetches)} fetches for "
                f"{len(refresh.fetches)} tokens in {refresh.seconds:.0f} s",
                refresh.idp_requests == len(refresh.fetches),
            )
        )
        ok = refresh.window_count > 0 and refresh.window_max_ms <= 2 * refresh.steady_p99_ms
        found.append(
            Check(
                "refresh: max latency ≤ 2x steady p99",
                f"{refresh.window_max_ms:.2f} ms vs 2 x {refresh.steady_p99_ms:.2f} ms",
                ok if refresh.window_count else None,
            )
        )
    return found


def _mark(check: Check) -> str:
    return "info" if check.info else {True: "met", False: "MISSED", None: "n/a"}[check.met]


# -- terminal -----------------------------------------------------------------------------


def summary_table(results: Results) -> str:
    rows = [(c.target, c.measured, _mark(c)) for c in checks(results)]
    widths = [max(len(r[i]) for r in [("target", "measured", ""), *rows]) for i in range(3)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(("target", "measured", ""), widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    for generator, summaries in results.hot.items():
        lines.append("")
        lines.append(f"hot path ({generator}, {results.connections} connections)")
        for s in summaries:
            lines.append(
                f"  {s.target:14} {s.rps:10,.0f} req/s  p50 {s.p50_ms:7.2f} ms  "
                f"p99 {s.p99_ms:7.2f} ms  errors {s.errors}"
            )
    soak = results.soak
    if soak is not None and soak.samples:
        growth = soak.growth_mib
        lines.append("")
        lines.append(
            f"soak ({soak.seconds:.0f} s, {soak.load.rps:,.0f} req/s): RSS start "
            f"{_mib(soak.start_rss)}, peak {_mib(soak.peak_rss)}, end {_mib(soak.end_rss)}, "
            f"growth {'n/a' if growth is None else f'{growth:+.2f}'} MiB per 10 min"
        )
    if results.profile is not None and results.profile.error is None:
        lines.append("")
        lines.append(f"profile: top by self ({results.profile.samples:,} samples)")
        for name, share in list(results.profile.self_share.items())[:8]:
            lines.append(f"  {share * 100:5.1f}%  {name}")
    elif results.profile is not None:
        lines.append("")
        lines.append(f"profile: {results.profile.error}")
    if results.forward:
        lines.append("")
        lines.append(f"forward proxy and gateway ({results.connections} connections)")
        for s in results.forward:
            lines.append(
                f"  {s.target:12} {s.rps:10,.0f} req/s  p50 {s.p50_ms:7.2f} ms  "
                f"p99 {s.p99_ms:7.2f} ms  errors {s.errors}"
            )
    return "\n".join(lines)


def _forward_section(results: Results, add: Callable[[str], None]) -> None:
    by = _by_name(results.forward)
    add("## Forward proxy and gateway")
    add("")
    add(
        f"Closed loop, {results.connections} keep-alive connections, the four targets "
        f"alternated in {results.rounds} round(s) of {results.duration:g} s (medians over the "
        "rounds). *api direct*: the API stand-in (`atlas_broker_dev.api_standin`, which "
        "verifies the RS256 token on every request) called with a token; *forward*: the same "
        "call through `/v1/realms/{realm}/forward/…`; *token route* and *gateway*: "
        "`/v1/realms/{realm}/token` and `/v1/realms/{realm}/gateway` on a cached token."
    )
    add("")
    add("| target | requests/s | p50 ms | p99 ms | requests | errors |")
    add("|---|---:|---:|---:|---:|---:|")
    for s in results.forward:
        add(
            f"| {s.target} | {s.rps:,.0f} | {_ms(s.p50_ms)} | {_ms(s.p99_ms)} | "
            f"{s.requests:,} | {s.errors} |"
        )
    add("")
    direct, forward = by["api direct"], by["forward"]
    token, gateway = by["token route"], by["gateway"]
    add(
        f"Forward overhead: p50 +{forward.p50_ms - direct.p50_ms:.2f} ms, "
        f"p99 +{forward.p99_ms - direct.p99_ms:.2f} ms over the direct call "
        f"({forward.rps / direct.rps:.2f}x its requests/s). Gateway vs token route: "
        f"{gateway.rps / token.rps:.2f}x requests/s, p99 {gateway.p99_ms:.2f} ms vs "
        f"{token.p99_ms:.2f} ms."
    )
    add("")


# -- markdown -----------------------------------------------------------------------------


def _hot_ratios(by: dict[str, Summary]) -> str:
    broker = by["broker"]
    parts = [
        f"broker/openbao **{broker.rps / by['openbao'].rps:.2f}x** requests/s, "
        f"p99 {broker.p99_ms / by['openbao'].p99_ms:.2f}x OpenBao's",
        f"broker/idp **{broker.rps / by['idp'].rps:.1f}x**",
    ]
    for name, label in (
        ("broker-gateway", "gateway/token"),
        ("broker-401", "401/cached 200"),
        ("raw asgi", "broker/raw ASGI"),
        ("bare fastapi", "broker/bare FastAPI"),
    ):
        other = by.get(name)
        if other is not None:
            ratio = other.rps / broker.rps if name.startswith("broker-") else broker.rps / other.rps
            parts.append(f"{label} **{ratio:.2f}x**")
    if "raw asgi" in by and "bare fastapi" in by:
        parts.append(f"bare FastAPI/raw ASGI {by['bare fastapi'].rps / by['raw asgi'].rps:.2f}x")
    return "Ratios (requests/s unless said): " + "; ".join(parts) + "."


def _soak_section(soak: SoakResult, add: Callable[[str], None], *, plot_name: str | None) -> None:
    add("## Soak")
    add("")
    add(
        f"One broker worker, wrk on the cached-token route for {soak.seconds:.0f} s after a "
        f"warm-up; the worker's RSS (`VmRSS`) sampled every {soak.interval:g} s. Growth is the "
        f"least-squares slope over the samples after the first {soak.settle:.0f} s, scaled to "
        f"10 minutes. The limit, {GROWTH_LIMIT_MIB:g} MiB per 10 min, is a few bytes per "
        "request at these rates: a leak of one small object per request is tens of MiB, while "
        "allocator arenas and bounded caches settling stay well below it."
    )
    add("")
    if plot_name:
        add(f"![worker RSS over the soak]({plot_name})")
        add("")
    growth = soak.growth_mib
    per_request = soak.bytes_per_request
    add("| | value |")
    add("|---|---:|")
    add(
        f"| requests (wrk) | {soak.load.requests:,} ({soak.load.rps:,.0f}/s, "
        f"{soak.load.errors} errors) |"
    )
    add(f"| latency p50 / p99 | {_ms(soak.load.p50_ms)} / {_ms(soak.load.p99_ms)} ms |")
    add(f"| RSS at the start (after warm-up) | {_mib(soak.start_rss)} |")
    add(f"| RSS peak | {_mib(soak.peak_rss)} |")
    add(f"| RSS at the end | {_mib(soak.end_rss)} |")
    add(f"| growth, MiB per 10 min | {'n/a' if growth is None else f'{growth:+.2f}'} |")
    add(f"| growth per request | {'n/a' if per_request is None else f'{per_request:+.3f} B'} |")
    add(f"| samples | {len(soak.samples)} |")
    add("")


def _workers_section(results: Results, scale: WorkersResult, add: Callable[[str], None]) -> None:
    add(f"## {scale.workers} workers")
    add("")
    add(
        f"One broker with `BROKER_WORKERS={scale.workers}` (Prometheus multiprocess mode), "
        f"{scale.warmups} warm-up requests each on a new connection, then wrk on the token "
        f"route ({scale.connections} connections, {scale.load.seconds:.0f} s), then "
        f"{len(scale.scrapes)} scrapes of `/metrics`, each on a new connection (any worker "
        "may answer). The count is `atlas_broker_http_request_duration_seconds_count` for "
        "the token route, all statuses."
    )
    add("")
    add("| | value |")
    add("|---|---:|")
    add(f"| wrk requests/s (all workers) | {scale.load.rps:,.0f} |")
    add(f"| requests/s per worker | {scale.load.rps / scale.workers:,.0f} |")
    single = _single_worker_rps(results)
    if single is not None:
        add(f"| requests/s, one worker (hot path, broker) | {single:,.0f} |")
    add(f"| latency p50 / p99 | {_ms(scale.load.p50_ms)} / {_ms(scale.load.p99_ms)} ms |")
    add(f"| requests wrk completed | {scale.load.requests:,} |")
    add(f"| warm-up requests | {scale.warmups} |")
    add(
        "| token-route HTTP requests counted by `/metrics` (each scrape) | "
        f"{', '.join(f'{n:,.0f}' for n in scale.scrapes)} |"
    )
    add(
        "| tokens issued for the realm, `atlas_broker_token_requests_total` (each scrape) | "
        f"{', '.join(f'{n:,.0f}' for n in scale.issued)} |"
    )
    for i, rss in enumerate(scale.peak_worker_rss):
        add(f"| worker {i + 1} RSS peak under load | {_mib(rss)} |")
    add("")
    add(
        "The cores are shared by the workers, wrk and everything else on the machine, so "
        "requests/s per worker is not expected to match one worker alone on these cores."
    )
    add("")


def _profile_section(top: TopFunctions, note: str, add: Callable[[str], None]) -> None:
    add("## Profile of the token route")
    add("")
    add(note)
    add("")
    if top.error is not None:
        add(f"No profile: {top.error}.")
        add("")
        return
    add(
        f"{top.samples:,} samples of the worker's main thread (the event loop) while not "
        f"idle; {top.other_threads:,} samples of other threads (thread pools, log flushing; "
        "mostly waiting) left out. A function's *self* share counts the samples where it was "
        "running, its *inclusive* share those where it was anywhere on the stack (frames on "
        "every stack, from the entry point to the event loop, left out; paths shortened by "
        "py-spy to package/module)."
    )
    add("")
    for title, shares in (("self", top.self_share), ("inclusive", top.inclusive_share)):
        add(f"| top by {title} | {title} % |")
        add("|---|---:|")
        for name, share in shares.items():
            add(f"| `{name}` | {share * 100:.1f} |")
        add("")


def _mib(value: int | None) -> str:
    return f"{value / 2**20:.1f} MiB" if value is not None else "n/a"


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def markdown(
    results: Results, *, plot_name: str | None, notes: str, soak_plot: str | None = None
) -> str:
    out: list[str] = []
    add = out.append
    add("# Benchmarks")
    add("")
    add(
        f"Measured by `bench/run.py` on {results.date}"
        + (" in **quick mode** (seconds per scenario: not representative)" if results.quick else "")
        + ". Every number above the hand-written notes at the end was produced by that run;"
        " rerun the command to refresh them."
    )
    add("")
    add("```sh")
    add(results.command)
    add("```")
    add("")
    add(f"Measured tree: `{results.tree}`; {os.cpu_count()} cores.")
    add("")
    if results.wrk_commands:
        add(
            "wrk commands, in the order run (each `-s` script sets the method and headers, "
            "credentials included, and prints a JSON summary; it is private to the run and "
            "removed after it):"
        )
        add("")
        add("```sh")
        for command in dict.fromkeys(results.wrk_commands):
            add(command)
        add("```")
        add("")
    add("## Machine")
    add("")
    add("| | |")
    add("|---|---|")
    for key, value in machine():
        add(f"| {key} | {value} |")
    add(
        f"| Broker | `broker serve`, {results.workers} worker(s) per replica, "
        "Redis on loopback, log level info |"
    )
    add(
        "| Load | generator, servers and Redis share the same cores; "
        f"{results.connections} connections, {results.rounds} round(s) of "
        f"{results.duration:g} s per target; python: one `httpx.AsyncClient` per connection "
        "(uvloop), wrk: one thread |"
    )
    add("")
    add("## Goals")
    add("")
    add("| target | measured | |")
    add("|---|---|---|")
    for check in checks(results):
        add(f"| {check.target} | {check.measured} | {_mark(check)} |")
    add("")
    for generator, summaries in results.hot.items():
        by = _by_name(summaries)
        add(f"## Hot path ({generator})")
        add("")
        add(
            f"Closed loop, {results.connections} keep-alive connections; targets alternated "
            f"A B C A B C … in {results.rounds} round(s) of {results.duration:g} s; each figure "
            "is the median over the rounds. *broker*: `GET /v1/realms/{realm}/token` on a "
            "cached token; *openbao*: `GET /v1/secret/data/atlas/realms/{realm}` with "
            "`X-Vault-Token` (OpenBao's default GOMAXPROCS: every core); *idp*: the "
            "development IdP's token endpoint (client "
            "credentials, RS256 signing per request); *broker-401*: the token route with a wrong "
            "key (its errors column counts the 401s); *broker-gateway*: "
            "`GET /v1/realms/{realm}/gateway` on the same cached token (its answer: an empty body "
            "and the token in `Authorization`). *raw asgi* and "
            "*bare fastapi* (`bench/limit_apps.py`) answer the body and headers of a cached-"
            "token response taken from this run's broker (content-type, cache-control, pragma, "
            "and that response's x-request-id, fixed where the broker makes one per request; "
            "uvicorn adds date and content-length) on one uvicorn worker with the "
            "broker's server settings (httptools, uvloop, no server header, no proxy headers) "
            "and no access log: a bare ASGI callable, and one FastAPI route returning a "
            "`Response`, the limits of one Python worker."
        )
        add("")
        add("| target | requests/s | p50 ms | p99 ms | requests | errors |")
        add("|---|---:|---:|---:|---:|---:|")
        for s in summaries:
            add(
                f"| {s.target} | {s.rps:,.0f} | {_ms(s.p50_ms)} | {_ms(s.p99_ms)} | "
                f"{s.requests:,} | {s.errors} |"
            )
        add("")
        add(_hot_ratios(by))
        add("")
        add("Per round (requests/s):")
        add("")
        add("| round | " + " | ".join(s.target for s in summaries) + " |")
        add("|---" * (len(summaries) + 1) + "|")
        for i in range(results.rounds):
            add(f"| {i + 1} | " + " | ".join(f"{s.rounds[i].rps:,.0f}" for s in summaries) + " |")
        add("")
    if results.forward:
        _forward_section(results, add)
    if results.stampede:
        add("## Stampede")
        add("")
        add(
            f"{results.stampede_replicas} broker replicas sharing one Redis; for each run a "
            f"new realm (cold: nothing in memory, Redis or the credential cache) and "
            f"{results.stampede[0].callers} concurrent callers, each on its own new "
            "connection, spread round-robin over the replicas. The time runs from the first "
            "request until the last caller holds its token."
        )
        add("")
        add("| run | callers | served | IdP requests | distinct tokens | all served after |")
        add("|---:|---:|---:|---:|---:|---:|")
        for i, run in enumerate(results.stampede, 1):
            add(
                f"| {i} | {run.callers} | {run.ok} | {run.idp_requests} | "
                f"{run.distinct_tokens} | {run.seconds * 1000:.0f} ms |"
            )
        add("")
    refresh = results.refresh
    if refresh is not None:
        add("## Refresh ahead")
        add("")
        add(
            f"Token lifetime {refresh.lifetime} s (`PUT /_dev/config`), "
            f"`BROKER_EXPIRY_SKEW={refresh.skew}`, "
            f"`BROKER_REFRESH_BEFORE={refresh.refresh_before}`: each token's successor is "
            f"fetched in the background about {_refresh_age(refresh):g}"
            f" s after it was issued. A paced stream of requests ran for {refresh.seconds:.0f} s "
            f"({len(refresh.samples):,} requests, {refresh.failed} failed). Requests that "
            f"started within ±{refresh.window * 1000:.0f} ms of a background fetch (from the "
            "broker's `token.fetched` audit events) form the refresh windows."
        )
        add("")
        if plot_name:
            add(f"![latency over time across token lifetimes]({plot_name})")
            add("")
        add("| | value |")
        add("|---|---:|")
        add(f"| background refreshes | {refresh.refreshes} |")
        add(f"| IdP requests for the realm | {refresh.idp_requests} |")
        add(
            f"| steady p99 (outside windows, n={refresh.steady_count:,}) | "
            f"{_ms(refresh.steady_p99_ms)} ms |"
        )
        add(
            f"| max during refresh windows (n={refresh.window_count:,}) | "
            f"{_ms(refresh.window_max_ms)} ms |"
        )
        add("")
    if results.soak is not None:
        _soak_section(results.soak, add, plot_name=soak_plot)
    if results.scale is not None:
        _workers_section(results, results.scale, add)
    if results.profile is not None:
        _profile_section(results.profile, results.profile_note, add)
    if results.rest_rss or results.load_rss or results.startup:
        add("## Footprint")
        add("")
        add("| | value |")
        add("|---|---:|")
        for i, rss in enumerate(results.rest_rss):
            add(f"| worker {i + 1} RSS at rest (one realm cached) | {_mib(rss)} |")
        if results.rest_supervisor_rss is not None:
            add(f"| supervisor RSS | {_mib(results.rest_supervisor_rss)} |")
        for i, rss in enumerate(results.load_rss):
            add(f"| worker {i + 1} RSS peak under the hot-path load | {_mib(rss)} |")
        if results.startup:
            add(
                f"| start-up, process start → `/healthz` 200 (median of {len(results.startup)}) | "
                f"{median(results.startup) * 1000:.0f} ms |"
            )
            add(f"| start-up, slowest | {max(results.startup) * 1000:.0f} ms |")
        add("")
    add("## Interpretation")
    add("")
    for line in interpretation(results):
        add(f"- {line}")
    add("")
    add(NOTES_MARKER)
    if notes:
        add(notes.rstrip("\n"))
    return "\n".join(out) + "\n"


def _refresh_age(refresh: RefreshResult) -> float:
    lead = min(refresh.refresh_before, refresh.lifetime / 2)
    return refresh.lifetime - refresh.skew - lead


def interpretation(results: Results) -> list[str]:
    lines = []
    for check in checks(results):
        verdict = _mark(check).lower().replace("n/a", "not measured")
        lines.append(f"{check.target}: {verdict} ({check.measured}).")
    if results.quick:
        lines.append("Quick mode: the run only shows the benchmark works; do not read speed.")
    return lines


def kept_notes(path: Path) -> str:
    """Hand-written notes below the marker of an existing report, if any."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    _, found, notes = text.partition(NOTES_MARKER)
    return notes.lstrip("\n") if found else ""


def plot_refresh(refresh: RefreshResult, path: Path) -> bool:
    """Latency over time with the background fetches marked; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=110)
    xs = [s[0] for s in refresh.samples]
    ys = [s[1] for s in refresh.samples]
    ax.scatter(xs, ys, s=3, alpha=0.45, color="#1f77b4", label="request latency")
    for i, fetched in enumerate(refresh.fetches[1:]):
        ax.axvspan(
            fetched - refresh.window,
            fetched + refresh.window,
            color="#ff7f0e",
            alpha=0.18,
            label="refresh window" if i == 0 else None,
        )
        ax.axvline(fetched, color="#ff7f0e", lw=1)
    if not math.isnan(refresh.steady_p99_ms):
        ax.axhline(refresh.steady_p99_ms, color="#2ca02c", ls="--", lw=1, label="steady p99")
        ax.axhline(2 * refresh.steady_p99_ms, color="#d62728", ls=":", lw=1, label="2 x steady p99")
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the first request")
    ax.set_ylabel("latency, ms (log)")
    ax.set_title(
        f"GET /v1/realms/{{realm}}/token across token lifetimes of {refresh.lifetime} s "
        "(first point: cold fetch)"
    )
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(True, which="both", alpha=0.25)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def plot_soak(soak: SoakResult, path: Path) -> bool:
    """The worker's RSS over the soak; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=110)
    ax.plot(
        [t for t, _ in soak.samples],
        [rss / 2**20 for _, rss in soak.samples],
        lw=1.2,
        label="worker RSS",
    )
    ax.axvline(soak.settle, color="#888888", ls=":", lw=1, label="slope fitted after this")
    ax.axhline(RSS_LIMIT / 2**20, color="#d62728", ls="--", lw=1, label="80 MiB limit")
    ax.set_xlabel("seconds under load")
    ax.set_ylabel("worker RSS, MiB")
    ax.set_ylim(0, max(RSS_LIMIT, soak.peak_rss) / 2**20 * 1.15)
    ax.set_title("Broker worker RSS under constant load on a cached token")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(True, alpha=0.25)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True
