"""`python -m bench.run`: start the stack, measure, print, write `docs/BENCHMARKS.md`.

    .venv/bin/python -m bench.run                  # full run, Python load generator
    .venv/bin/python -m bench.run --generator wrk  # hot path with wrk (apt install wrk)
    .venv/bin/python -m bench.run --generator both # hot path with both generators
    .venv/bin/python -m bench.run --quick --output /tmp/b.md   # seconds per scenario
    .venv/bin/python -m bench.run --only hot soak --soak-seconds 120 --output /tmp/b.md
    .venv/bin/python -m bench.run --generator wrk --profile --py-spy /path/to/py-spy

Scenarios (`--only`, default all):

- hot: the cached-token route, the gateway route and a 401 of one broker, OpenBao's KV
  read, the IdP, and the framework limits (`bench/limit_apps.py`: a raw ASGI app and a
  bare FastAPI route answering the same bytes on one uvicorn worker), alternated in rounds;
- forward, stampede, refresh, startup: the forward proxy, cold-realm stampede over three
  replicas, refresh ahead across token lifetimes, start-up time;
- workers: one broker with `BROKER_WORKERS=2` under wrk, then `/metrics` checked to count
  every request of every worker (needs wrk);
- soak: wrk on a cached token against one worker for `--soak-seconds` (default 600, quick
  20) while its RSS is sampled (needs wrk).

`--profile` records the hot-path broker worker with py-spy (`--py-spy PATH`, else py-spy
on PATH or beside this interpreter) during one extra round of the token route and adds
the top functions to the report. `--baseline PYTHON` adds the token route of another
installation of the broker (say an earlier commit checked out beside this one, with its
own venv) to the hot-path rounds, as the row `broker (baseline)`: before and after,
measured side by side. The report's header names the measured git commit, the core
count, this command line and every wrk command run.

Everything runs on 127.0.0.1; every load loop is bounded by its duration.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx

if __package__ in (None, ""):  # `python bench/run.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from atlas_broker_dev.api_standin import start_api_standin
from bench import endurance, profile, report, scenarios
from bench.load import WRK_COMMANDS, Target, wrk_available
from bench.procinfo import BrokerProcesses
from bench.procinfo import available as proc_available
from bench.stack import BenchStack, bench_stack

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("hot", "forward", "stampede", "refresh", "startup", "workers", "soak")
WRK_ONLY = ("workers", "soak")
SCALE_WORKERS = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers per broker")
    parser.add_argument("--quick", action="store_true", help="a few seconds per scenario")
    parser.add_argument("--connections", type=int, help="hot-path connections (default 32)")
    parser.add_argument("--duration", type=float, help="seconds per hot-path round (default 5)")
    parser.add_argument("--rounds", type=int, help="hot-path rounds A B C (default 3)")
    parser.add_argument(
        "--generator",
        choices=["python", "wrk", "both"],
        default="python",
        help="hot-path load generator (default: python; wrk must be on PATH)",
    )
    parser.add_argument("--callers", type=int, default=300, help="stampede callers")
    parser.add_argument("--stampede-runs", type=int, help="stampede runs (default 5)")
    parser.add_argument("--lifetime", type=int, help="refresh: token lifetime, s (default 8)")
    parser.add_argument("--lifetimes", type=int, help="refresh: lifetimes to run (default 5)")
    parser.add_argument("--startups", type=int, help="start-up measurements (default 5)")
    parser.add_argument(
        "--soak-seconds", type=int, help="soak: seconds under load (default 600, quick 20)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the broker during a token-route round"
    )
    parser.add_argument("--py-spy", dest="py_spy", help="the py-spy executable to use")
    parser.add_argument(
        "--baseline",
        metavar="PYTHON",
        help="the Python of another installation of the broker (e.g. an earlier commit's "
        "checkout: its .venv/bin/python): its token route joins the hot-path rounds",
    )
    parser.add_argument(
        "--output", type=Path, default=ROOT / "docs" / "BENCHMARKS.md", help="report path"
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the process logs")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SCENARIOS,
        default=list(SCENARIOS),
        help="run only these scenarios (default: all)",
    )
    return parser


def _defaults(args: argparse.Namespace) -> None:
    quick = args.quick
    for name, full, fast in (
        ("connections", 32, 16),
        ("duration", 5.0, 1.0),
        ("rounds", 3, 1),
        ("stampede_runs", 5, 1),
        ("lifetime", 8, 4),
        ("lifetimes", 5, 2),
        ("startups", 5, 1),
        ("soak_seconds", 600, 20),
    ):
        if getattr(args, name) is None:
            setattr(args, name, fast if quick else full)


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


async def measure(stack: BenchStack, args: argparse.Namespace, results: report.Results) -> None:
    generators = ["python", "wrk"] if args.generator == "both" else [args.generator]
    if "wrk" in generators and not wrk_available():
        raise SystemExit("bench: --generator wrk needs wrk on PATH (apt-get install wrk)")
    if not wrk_available() and any(name in args.only for name in WRK_ONLY):
        _say("wrk not on PATH (apt-get install wrk): no workers or soak scenario")
        args.only = [name for name in args.only if name not in WRK_ONLY]

    if "hot" in args.only:
        await _hot(stack, args, results, generators)
    if "forward" in args.only:
        await _forward(stack, args, results)
    if "stampede" in args.only:
        await _stampede(stack, args, results)
    if "refresh" in args.only:
        _say(f"refresh: {args.lifetimes} lifetimes of {args.lifetime} s")
        results.refresh = await scenarios.refresh_ahead(
            stack, lifetime=args.lifetime, lifetimes=args.lifetimes, callers=8, pace=0.02
        )
    if "startup" in args.only:
        _say(f"start-up: {args.startups} fresh broker(s)")
        results.startup = await asyncio.to_thread(
            scenarios.startup_seconds, stack, attempts=args.startups
        )
    if "workers" in args.only:
        await _workers(stack, args, results)
    if "soak" in args.only:
        await _soak(stack, args, results)


async def _hot(
    stack: BenchStack, args: argparse.Namespace, results: report.Results, generators: list[str]
) -> None:
    _say(f"hot path: starting a broker with {args.workers} worker(s)")
    hot_broker = stack.start_broker(name="broker-hot")
    realm = stack.new_realm("hot")
    token = scenarios.hot_path_targets(stack, hot_broker.url, realm)[0]
    processes = BrokerProcesses.of(hot_broker.process.proc.pid)  # type: ignore[union-attr]
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(max(1, args.workers) * 4):  # warm every worker's memory cache
            sample = await client.get(token.url, headers=token.headers)
            sample.raise_for_status()
    _say("hot path: the framework limits, answering a cached-token response of this broker")
    limits = scenarios.start_limit_apps(stack, sample)
    targets = scenarios.hot_path_targets(stack, hot_broker.url, realm, limits=limits)
    baseline = None
    if args.baseline:
        # Another installation of the broker (an earlier commit), in the same rounds: a
        # before/after measured side by side. Its own key prefix keeps the two apart.
        _say(f"hot path: a baseline broker run by {args.baseline}")
        baseline = stack.start_broker(
            name="broker-baseline", python=args.baseline, BROKER_KEY_PREFIX="bench-baseline"
        )
        path = token.url.removeprefix(hot_broker.url)
        targets.append(Target(report.BASELINE_ROW, "GET", baseline.url + path, token.headers))
    if proc_available():
        results.rest_rss = processes.worker_rss()
        results.rest_supervisor_rss = processes.supervisor_rss()
    sampler = scenarios.MemorySampler(processes)
    for generator in generators:
        rounds = f"{args.rounds} round(s) x {len(targets)} targets x {args.duration:g} s"
        _say(f"hot path ({generator}): {rounds}")
        results.hot[generator] = await scenarios.hot_path(
            targets,
            generator=generator,
            connections=args.connections,
            duration=args.duration,
            rounds=args.rounds,
            workdir=stack.workdir,
            sampler=sampler,
        )
    results.load_rss = sampler.peak_worker_rss
    if baseline is not None:
        baseline.process.stop()
        stack.processes.remove(baseline.process)
    for app in limits:
        app.process.stop()
        stack.processes.remove(app.process)
    if args.profile:
        await _profile(stack, args, results, token, processes, generators[-1])
    hot_broker.process.stop()
    stack.processes.remove(hot_broker.process)


async def _profile(
    stack: BenchStack,
    args: argparse.Namespace,
    results: report.Results,
    token: Target,
    processes: BrokerProcesses,
    generator: str,
) -> None:
    py_spy = profile.find_py_spy(args.py_spy)
    seconds = max(1, round(args.duration))
    pid = processes.serving()[0]
    if py_spy is None:
        _say("--profile: no py-spy (pip install py-spy, or --py-spy PATH)")
        results.profile = profile.TopFunctions(0, error="py-spy not found")
        return
    _say(f"profile: py-spy on the broker worker for one {seconds} s token-route round")
    results.profile_note = (
        f"`{Path(py_spy).name} record -p <worker> -f raw -r 200 --nolineno -d {seconds}` on "
        f"the hot-path broker's worker during one extra {seconds} s round of the token route "
        f"({generator}, {args.connections} connections), after the measured rounds."
    )
    load = scenarios.load_once(
        token,
        generator=generator,
        connections=args.connections,
        duration=seconds,
        workdir=stack.workdir,
    )
    for _attempt in range(3):  # py-spy sometimes fails to read the interpreter's version
        _, results.profile = await profile.record_during(
            py_spy, pid, load, seconds=seconds, output=stack.workdir / "py-spy.raw"
        )
        if results.profile.error is None:
            return
        _say(f"profile: {results.profile.error}")
        load = scenarios.load_once(
            token,
            generator=generator,
            connections=args.connections,
            duration=seconds,
            workdir=stack.workdir,
        )
    load.close()


async def _workers(stack: BenchStack, args: argparse.Namespace, results: report.Results) -> None:
    _say(f"workers: one broker with BROKER_WORKERS={SCALE_WORKERS}, wrk on the token route")
    broker = stack.start_broker(name="broker-workers", BROKER_WORKERS=str(SCALE_WORKERS))
    try:
        realm = stack.new_realm("workers")
        token = scenarios.hot_path_targets(stack, broker.url, realm)[0]
        processes = await endurance.wait_for_workers(broker.process.proc.pid, SCALE_WORKERS)  # type: ignore[union-attr]
        results.scale = await endurance.workers_run(
            token,
            f"{broker.url}/metrics",
            realm.name,
            processes,
            connections=args.connections,
            seconds=2 * args.duration,
            workdir=stack.workdir,
        )
    finally:
        broker.process.stop()
        stack.processes.remove(broker.process)


async def _soak(stack: BenchStack, args: argparse.Namespace, results: report.Results) -> None:
    _say(f"soak: one broker worker under wrk for {args.soak_seconds} s, RSS sampled")
    broker = stack.start_broker(name="broker-soak", BROKER_WORKERS="1")
    try:
        realm = stack.new_realm("soak")
        token = scenarios.hot_path_targets(stack, broker.url, realm)[0]
        results.soak = await endurance.soak(
            token,
            BrokerProcesses.of(broker.process.proc.pid),  # type: ignore[union-attr]
            seconds=args.soak_seconds,
            connections=args.connections,
            warmup=2 if args.quick else 10,
            workdir=stack.workdir,
        )
    finally:
        broker.process.stop()
        stack.processes.remove(broker.process)


def _tree() -> str:
    """The measured commit, and whether tracked files differ from it."""

    executable = shutil.which("git")

    def git(*argv: str) -> str:
        if executable is None:
            return ""
        done = subprocess.run(  # noqa: S603 - fixed argv
            [executable, *argv], cwd=ROOT, capture_output=True, text=True, check=False, timeout=10
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    if not commit:
        return "unknown (not a git checkout)"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return commit + (" (dirty: uncommitted changes to tracked files)" if dirty else " (clean)")


async def _forward(stack: BenchStack, args: argparse.Namespace, results: report.Results) -> None:
    _say("forward proxy and gateway: the API stand-in and a broker forwarding to it")
    api = start_api_standin(stack.workdir, idp_url=stack.idp.url)
    try:
        broker = stack.start_broker(name="broker-forward", BROKER_API_URL=api.url)
        realm = stack.new_realm("forward")
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(
                f"{broker.url}/v1/realms/{realm.name}/token",
                headers={"Authorization": f"Bearer {stack.caller_key}"},
            )
            response.raise_for_status()
        targets = scenarios.forward_targets(
            stack, broker.url, realm, api_url=api.url, token=response.json()["access_token"]
        )
        _say(f"forward: {args.rounds} round(s) x 4 targets x {args.duration:g} s")
        results.forward = await scenarios.hot_path(
            targets,
            generator="python",
            connections=args.connections,
            duration=args.duration,
            rounds=args.rounds,
            workdir=stack.workdir,
            sampler=scenarios.MemorySampler(BrokerProcesses.of(broker.process.proc.pid)),  # type: ignore[union-attr]
        )
        broker.process.stop()
        stack.processes.remove(broker.process)
    finally:
        api.process.stop()


async def _stampede(stack: BenchStack, args: argparse.Namespace, results: report.Results) -> None:
    _say(f"stampede: 3 replicas, {args.callers} callers, {args.stampede_runs} run(s)")
    replicas = stack.start_brokers(3)  # one key prefix: one Redis namespace
    for _ in range(args.stampede_runs):
        run = await scenarios.stampede(stack, [r.url for r in replicas], callers=args.callers)
        results.stampede.append(run)
    for replica in replicas:
        replica.process.stop()
        stack.processes.remove(replica.process)


def _run(coroutine: object) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)  # type: ignore[arg-type]
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coroutine)  # type: ignore[arg-type]


# Options naming programs of this machine: the report shows what they are, not where.
_PLACEHOLDERS = {"--py-spy": "<py-spy>", "--baseline": "<python of the baseline checkout>"}


def _shown(argv: list[str]) -> list[str]:
    shown = list(argv)
    for i, arg in enumerate(shown[:-1]):
        if arg in _PLACEHOLDERS:
            shown[i + 1] = _PLACEHOLDERS[arg]
    return shown


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _defaults(args)
    command = "python -m bench.run " + shlex.join(
        _shown(argv if argv is not None else sys.argv[1:])
    )
    results = report.Results(
        command=command.strip(),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        workers=args.workers,
        quick=args.quick,
        connections=args.connections,
        duration=args.duration,
        rounds=args.rounds,
        tree=_tree(),
    )
    with bench_stack(workers=args.workers, keep=args.keep_logs) as stack:
        _run(measure(stack, args, results))

    output: Path = args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    plot_path = output.parent / "refresh-latency.png"
    plot_name = None
    if results.refresh is not None and report.plot_refresh(results.refresh, plot_path):
        plot_name = plot_path.name
    elif results.refresh is not None:
        _say("matplotlib not installed (pip install -e '.[bench]'): no refresh plot")
    soak_plot = None
    soak_path = output.parent / "soak-rss.png"
    if results.soak is not None and report.plot_soak(results.soak, soak_path):
        soak_plot = soak_path.name
    results.wrk_commands = list(WRK_COMMANDS)
    notes = report.kept_notes(output)
    output.write_text(
        report.markdown(results, plot_name=plot_name, notes=notes, soak_plot=soak_plot)
    )
    print(report.summary_table(results), flush=True)
    _say(f"report written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
