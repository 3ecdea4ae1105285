"""`broker audit`: read and follow the audit trail through the broker's `GET /v1/audit`.

    broker audit --realm acme --since 2h          the last two hours of realm acme
    broker audit --event token.denied --follow    refusals, as they happen
    broker audit --json --since 2026-11-27T00:00:00Z | jq .

Events print oldest first, so the newest is at the bottom, next to the prompt, and
`--follow` appends to it. The caller's key comes from `BROKER_API_KEY` (never an argument,
which `ps` would show); the caller needs the auditor or admin role.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO, cast

from atlas_broker_client import AuditFilters, BrokerClient, BrokerClientError
from broker.cli._common import (
    CLIENT_ENV_HELP,
    EXIT_CODES_HELP,
    EXIT_OK,
    EXIT_USAGE,
    Commands,
    UsageError,
    add_json_flag,
    client_from_env,
    fail,
    print_json,
)

_RELATIVE = re.compile(r"^(\d{1,9})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_COLUMNS = (("time", 24), ("event", 19), ("caller", 18), ("realm", 16), ("detail", 20))
_FOLLOW_PAGE = 100
_FOLLOW_MAX_NEW = 5_000


def instant(text: str) -> str:
    """`--since` / `--until`: RFC 3339 as is, or `30s` / `15m` / `2h` / `7d` ago."""
    match = _RELATIVE.fullmatch(text)
    if match:
        ago = timedelta(**{_UNITS[match[2]]: int(match[1])})
        return (datetime.now(UTC) - ago).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (RFC 3339 or e.g. 15m)") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset, e.g. a trailing Z")
    return text


def add_parser(commands: Commands) -> None:
    """Register `audit` on the `broker` command's sub-commands."""
    parser = commands.add_parser(
        "audit",
        help="query or follow the audit trail (key from BROKER_API_KEY)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"{CLIENT_ENV_HELP}\n{EXIT_CODES_HELP}",
    )
    parser.add_argument("--realm")
    parser.add_argument("--caller")
    parser.add_argument("--event", help="e.g. token.issued, token.denied")
    parser.add_argument("--since", type=instant, help="RFC 3339, or 30s / 15m / 2h / 7d ago")
    parser.add_argument("--until", type=instant, help="RFC 3339, or 30s / 15m / 2h / 7d ago")
    parser.add_argument(
        "--limit", type=int, default=50, help="the newest N events to show (default 50)"
    )
    parser.add_argument("--follow", "-f", action="store_true", help="then print new events")
    parser.add_argument("--interval", type=float, default=2.0, help="follow poll seconds")
    add_json_flag(parser, "one JSON object per line")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        client = client_from_env()
    except UsageError as exc:
        print(f"broker audit: {exc}", file=sys.stderr)
        return EXIT_USAGE
    filters = _filters(args, ("realm", "caller", "event", "since", "until"))
    printer = _Printer(out, as_json=args.json)
    try:
        with client:
            events = list(client.audit_events(wanted=max(1, args.limit), **filters))
            printer.header()
            printer.print(reversed(events))
            if args.follow:
                _follow(client, printer, seen=[e.get("id") for e in events], args=args)
    except BrokerClientError as exc:
        return fail("audit", exc)
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def _filters(args: argparse.Namespace, names: Iterable[str]) -> AuditFilters:
    given = {name: value for name in names if (value := getattr(args, name)) is not None}
    return cast(AuditFilters, given)


def _follow(
    client: BrokerClient,
    printer: _Printer,
    *,
    seen: list[Any],
    args: argparse.Namespace,
) -> None:
    """Poll the head of the trail; print what was not seen yet, oldest first."""
    known: deque[Any] = deque(seen, maxlen=10_000)
    live = _filters(args, ("realm", "caller", "event"))
    while True:
        time.sleep(args.interval)
        fresh: list[dict[str, Any]] = []
        try:
            for event in client.audit_events(
                wanted=_FOLLOW_MAX_NEW, page_size=_FOLLOW_PAGE, **live
            ):
                if event.get("id") in known:
                    break
                fresh.append(event)
        except BrokerClientError as exc:
            print(f"broker audit: {exc}; retrying", file=sys.stderr)
            continue
        known.extend(event.get("id") for event in fresh)
        printer.print(reversed(fresh))


class _Printer:
    def __init__(self, out: TextIO, *, as_json: bool) -> None:
        self._out = out
        self._json = as_json

    def header(self) -> None:
        if not self._json:
            titles = {name: name.upper() for name, _ in _COLUMNS}
            self._line(titles, "REQUEST")

    def print(self, events: Iterable[dict[str, Any]]) -> None:
        for event in events:
            if self._json:
                print_json(event, out=self._out)
            else:
                self._row(event)
        self._out.flush()

    def _row(self, event: dict[str, Any]) -> None:
        # The reason of a refusal, else where a token came from and its fingerprint.
        detail = str(event.get("reason") or event.get("source") or "")
        if event.get("token_sha256"):
            detail = f"{detail} {str(event['token_sha256'])[:8]}".strip()
        self._line({**event, "detail": detail}, str(event.get("request_id") or "-"))

    def _line(self, cells: dict[str, Any], last: str) -> None:
        line = " ".join(
            f"{str(cells.get(name) or '-')[:width]:<{width}}" for name, width in _COLUMNS
        )
        self._out.write(f"{line} {last}\n")
