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
from bench.load import Summary
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
    met: bool | None  # None: not measured


def checks(results: Results) -> list[Check]:
    found: list[Check] = []
    for generator, summaries in results.hot.items():
        by = _by_name(summaries)
        broker, bao, idp = by["broker"], by["openbao"], by["idp"]
        found.append(
            Check(
                f"hot path ≥ OpenBao read, requests/s ({generator})",
                f"{broker.rps:,.0f} vs {bao.rps:,.0f} = {broker.rps / bao.rps:.2f}x",
                broker.rps >= bao.rps,
            )
        )
        found.append(
            Check(
                f"hot path p99 ≤ OpenBao read p99 ({generator})",
                f"{broker.p99_ms:.2f} ms vs {bao.p99_ms:.2f} ms",
                broker.p99_ms <= bao.p99_ms,
            )
        )
        found.append(
            Check(
                f"hot path ≥ 5x direct IdP, requests/s ({generator})",
                f"{broker.rps:,.0f} vs {idp.rps:,.0f} = {broker.rps / idp.rps:.1f}x",
                broker.rps >= 5 * idp.rps,
            )
        )
        refused = by.get("broker-401")
        if refused is not None:
            found.append(
                Check(
                    f"a refusal (401) costs no more than a cached token, requests/s ({generator})",
                    f"{refused.rps:,.0f} vs {broker.rps:,.0f} = {refused.rps / broker.rps:.2f}x",
                    refused.rps >= broker.rps,
                )
            )
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


def _mark(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "n/a"}[met]


# -- terminal -----------------------------------------------------------------------------


def summary_table(results: Results) -> str:
    rows = [(c.target, c.measured, _mark(c.met)) for c in checks(results)]
    widths = [max(len(r[i]) for r in [("target", "measured", ""), *rows]) for i in range(3)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(("target", "measured", ""), widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    for generator, summaries in results.hot.items():
        lines.append("")
        lines.append(f"hot path ({generator}, {results.connections} connections)")
        for s in summaries:
            lines.append(
                f"  {s.target:8} {s.rps:10,.0f} req/s  p50 {s.p50_ms:7.2f} ms  "
                f"p99 {s.p99_ms:7.2f} ms  errors {s.errors}"
            )
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


def _mib(value: int | None) -> str:
    return f"{value / 2**20:.1f} MiB" if value is not None else "n/a"


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def markdown(results: Results, *, plot_name: str | None, notes: str) -> str:
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
    add("## Targets of issue 7")
    add("")
    add("| target | measured | |")
    add("|---|---|---|")
    for check in checks(results):
        add(f"| {check.target} | {check.measured} | {_mark(check.met)} |")
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
            "`X-Vault-Token`; *idp*: the development IdP's token endpoint (client "
            "credentials, RS256 signing per request); *broker-401*: the token route with a wrong "
            "key (its errors column counts the 401s)."
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
        add(
            f"Ratios: broker/openbao **{by['broker'].rps / by['openbao'].rps:.2f}x** "
            f"requests/s, p99 {by['broker'].p99_ms / by['openbao'].p99_ms:.2f}x OpenBao's; "
            f"broker/idp **{by['broker'].rps / by['idp'].rps:.1f}x** requests/s."
        )
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
        verdict = {True: "met", False: "missed", None: "not measured"}[check.met]
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
