"""`broker realms`, `broker rotate REALM`, `broker evict REALM`: the realms' status and the
admin operations on them, through the broker's HTTP API.

    broker realms                 the realms this caller may use (status for auditors)
    broker rotate acme            re-read acme's secret from Vault, replace its token everywhere
    broker evict acme --json      drop acme's token on every replica (a suspected leak)

The caller's key comes from `BROKER_API_KEY` (never an argument, which `ps` would show);
rotate and evict need the admin role, the status columns the auditor role.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TextIO

from atlas_broker_client import BrokerClient, BrokerClientError, RealmInfo, is_valid_realm
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

_STATUS_COLUMNS = (
    ("realm", 24),
    ("cached", 6),
    ("expires_at", 20),
    ("last_refresh", 20),
    ("credential_version", 7),
)


def _realm(text: str) -> str:
    if not is_valid_realm(text):
        raise argparse.ArgumentTypeError(f"not a realm name: {text!r}")
    return text


def add_parser(commands: Commands) -> None:
    """Register `realms`, `rotate` and `evict` on the `broker` command's sub-commands."""
    realms = _add(commands, "realms", "list the realms the caller may use (status for auditors)")
    add_json_flag(realms, 'print the broker\'s answer, {"realms": [...]}')
    realms.set_defaults(run=run_realms)

    rotate = _add(commands, "rotate", "admin: re-read a realm's credentials, replace its token")
    rotate.add_argument("realm", metavar="REALM", type=_realm)
    add_json_flag(rotate, "print the realm's status after the rotation as JSON")
    rotate.set_defaults(run=run_rotate)

    evict = _add(commands, "evict", "admin: drop a realm's cached token on every replica")
    evict.add_argument("realm", metavar="REALM", type=_realm)
    add_json_flag(evict, 'print {"realm": ..., "evicted": true}')
    evict.set_defaults(run=run_evict)


def _add(commands: Commands, name: str, help_text: str) -> argparse.ArgumentParser:
    return commands.add_parser(
        name,
        help=help_text,
        description=__doc__,
        epilog=f"{CLIENT_ENV_HELP}\n{EXIT_CODES_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _with_client(
    command: str, action: Callable[[BrokerClient], int], *, err: TextIO | None = None
) -> int:
    try:
        client = client_from_env()
    except UsageError as exc:
        print(f"broker {command}: {exc}", file=err or sys.stderr)
        return EXIT_USAGE
    try:
        with client:
            return action(client)
    except BrokerClientError as exc:
        return fail(command, exc, err=err)


def run_realms(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    output = out or sys.stdout

    def action(client: BrokerClient) -> int:
        realms = client.realms()
        if args.json:
            print_json({"realms": [realm.raw for realm in realms]}, out=output)
        elif any(realm.cached is not None for realm in realms):
            _status_table(realms, output)
        else:
            output.writelines(f"{realm.realm}\n" for realm in realms)
        return EXIT_OK

    return _with_client("realms", action)


def run_rotate(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    output = out or sys.stdout

    def action(client: BrokerClient) -> int:
        status = client.rotate(args.realm)
        if args.json:
            print_json(status.raw, out=output)
        else:
            output.write(
                f"rotated {status.realm}: credential version {status.credential_version}, "
                f"token expires {status.expires_at or '-'}\n"
            )
        return EXIT_OK

    return _with_client("rotate", action)


def run_evict(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    output = out or sys.stdout

    def action(client: BrokerClient) -> int:
        client.evict(args.realm)
        if args.json:
            print_json({"realm": args.realm, "evicted": True}, out=output)
        else:
            output.write(f"evicted the token of {args.realm} on every replica\n")
        return EXIT_OK

    return _with_client("evict", action)


def _status_table(realms: list[RealmInfo], out: TextIO) -> None:
    titles = ["REALM", "CACHED", "EXPIRES_AT", "LAST_REFRESH", "VERSION"]
    widths = [width for _, width in _STATUS_COLUMNS]
    out.write(" ".join(f"{t:<{w}}" for t, w in zip(titles, widths, strict=True)) + " LAST_ERROR\n")
    for realm in realms:
        cells = [
            realm.realm,
            "yes" if realm.cached else "no",
            realm.expires_at or "-",
            realm.last_refresh or "-",
            str(realm.credential_version) if realm.credential_version is not None else "-",
        ]
        line = " ".join(f"{c[:w]:<{w}}" for c, w in zip(cells, widths, strict=True))
        out.write(f"{line} {realm.last_error or '-'}\n")
