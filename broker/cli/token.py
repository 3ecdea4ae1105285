"""`broker token REALM`: print a realm's Atlas token, for shell scripts and cron jobs.

    TOKEN=$(broker token acme) || exit
    curl -H "Authorization: Bearer $TOKEN" https://atlas.example.com/v2/accounts

The caller's key comes from `BROKER_API_KEY` (never from an argument, which `ps` would
show), or a workload JWT from `--jwt-file`; it is never printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import TextIO

from atlas_broker_client import (
    DEFAULT_BROKER_URL,
    DEFAULT_MIN_TTL,
    BrokerClient,
    BrokerClientError,
    BrokerConfigError,
)
from broker.cli._common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    EXIT_USAGE,
    Commands,
    add_json_flag,
    fail,
    print_json,
)

_EPILOG = f"""\
environment:
  BROKER_URL        the broker (default {DEFAULT_BROKER_URL})
  BROKER_API_KEY    the caller's API key (not needed with --jwt-file)

{EXIT_CODES_HELP.replace("0  done", "0  the token was printed")}"""


def add_parser(commands: Commands) -> None:
    """Register `token` on the `broker` command's sub-commands."""
    parser = commands.add_parser(
        "token",
        help="print a realm's Atlas token (caller key from BROKER_API_KEY)",
        description="Print an Atlas API token for REALM, obtained from the broker.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("realm", metavar="REALM", help="the realm whose token to print")
    add_json_flag(parser, "print the broker's JSON answer (token, expires_in, expires_at, realm)")
    parser.add_argument(
        "--min-ttl",
        type=_min_ttl,
        default=DEFAULT_MIN_TTL,
        help=f"seconds the token must still be valid (default {DEFAULT_MIN_TTL})",
    )
    parser.add_argument(
        "--jwt-file",
        metavar="PATH",
        help="authenticate with the workload JWT in PATH instead of BROKER_API_KEY",
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the broker (default 10)"
    )
    parser.set_defaults(run=run)


def _min_ttl(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or int(value) > 86400:
        raise argparse.ArgumentTypeError("must be an integer from 0 to 86400")
    return int(value)


def run(
    args: argparse.Namespace,
    *,
    environ: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run `broker token` with parsed `args`; the exit code."""
    env = os.environ if environ is None else environ
    out, err = stdout or sys.stdout, stderr or sys.stderr
    api_key = None if args.jwt_file else env.get("BROKER_API_KEY") or None
    if api_key is None and not args.jwt_file:
        print("broker token: set BROKER_API_KEY or pass --jwt-file", file=err)
        return EXIT_USAGE
    try:
        with BrokerClient(
            env.get("BROKER_URL") or DEFAULT_BROKER_URL,
            api_key=api_key,
            jwt_file=args.jwt_file or None,
            timeout=args.timeout,
        ) as client:
            token = client.token(args.realm, min_ttl=args.min_ttl)
    except BrokerConfigError as exc:
        print(f"broker token: {exc}", file=err)
        return EXIT_USAGE
    except BrokerClientError as exc:
        return fail("token", exc, err=err)
    if args.json:
        print_json(token.as_json(), out=out)
    else:
        print(token.access_token, file=out)
    return EXIT_OK
