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
import json
import os
import re
import sys
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
_RELATIVE = re.compile(r"^(\d{1,9})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_COLUMNS = (("time", 24), ("event", 19), ("caller", 18), ("realm", 16), ("detail", 20))
_FOLLOW_PAGE = 100
_FOLLOW_MAX_NEW = 5_000


class AuditCliError(Exception):
    """A failure to report in one line and exit 1."""


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


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `audit` on the `broker` command's sub-commands."""
    parser = commands.add_parser(
        "audit",
        help="query or follow the audit trail (key from BROKER_API_KEY)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="environment:\n  BROKER_URL      the broker (default "
        f"{DEFAULT_URL})\n  BROKER_API_KEY  an auditor's or admin's API key",
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
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def run(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    key = os.environ.get("BROKER_API_KEY")
    if not key:
        print("broker audit: set BROKER_API_KEY to an auditor's key", file=sys.stderr)
        return 2
    url = os.environ.get("BROKER_URL", DEFAULT_URL).rstrip("/")
    filters = {
        name: value
        for name in ("realm", "caller", "event", "since", "until")
        if (value := getattr(args, name)) is not None
    }
    printer = _Printer(out, as_json=args.json)
    try:
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=15.0
        ) as client:
            events = list(_newest(client, filters, wanted=max(1, args.limit)))
            printer.header()
            printer.print(reversed(events))
            if args.follow:
                _follow(client, filters, printer, seen=[e.get("id") for e in events], args=args)
    except AuditCliError as exc:
        print(f"broker audit: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def _page(client: httpx.Client, params: dict[str, Any]) -> dict[str, Any]:
    try:
        response = client.get("/v1/audit", params=params)
    except httpx.HTTPError as exc:
        raise AuditCliError(f"the broker is unreachable ({type(exc).__name__})") from exc
    if response.status_code != 200:
        try:
            detail = response.json().get("detail", "")
        except ValueError:
            detail = ""
        raise AuditCliError(f"HTTP {response.status_code} {detail}".strip())
    body: dict[str, Any] = response.json()
    return body


def _newest(
    client: httpx.Client, filters: dict[str, str], *, wanted: int, page: int = 1000
) -> Iterator[Any]:
    """Up to `wanted` events, newest first, following cursors across pages."""
    cursor: str | None = None
    given = 0
    while given < wanted:
        params: dict[str, Any] = {**filters, "limit": min(page, wanted - given)}
        if cursor:
            params["cursor"] = cursor
        body = _page(client, params)
        for event in body["events"]:
            given += 1
            yield event
        cursor = body.get("next_cursor")
        if not cursor:
            return


def _follow(
    client: httpx.Client,
    filters: dict[str, str],
    printer: _Printer,
    *,
    seen: list[Any],
    args: argparse.Namespace,
) -> None:
    """Poll the head of the trail; print what was not seen yet, oldest first."""
    known: deque[Any] = deque(seen, maxlen=10_000)
    live = {k: v for k, v in filters.items() if k not in ("since", "until")}
    while True:
        time.sleep(args.interval)
        fresh: list[dict[str, Any]] = []
        try:
            for event in _newest(client, live, wanted=_FOLLOW_MAX_NEW, page=_FOLLOW_PAGE):
                if event.get("id") in known:
                    break
                fresh.append(event)
        except AuditCliError as exc:
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

    def print(self, events: Iterator[dict[str, Any]]) -> None:
        for event in events:
            if self._json:
                self._out.write(json.dumps(event, separators=(",", ":")) + "\n")
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
