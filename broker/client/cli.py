"""`broker token REALM`: print a realm's Atlas token, for shell scripts and cron jobs.

    TOKEN=$(broker token acme) || exit
    curl -H "Authorization: Bearer $TOKEN" https://atlas.example.com/v2/accounts

The caller's key comes from `BROKER_API_KEY` (never from an argument, which `ps` would
show), or a workload JWT from `--jwt-file`; it is never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from typing import TextIO

from broker.client.auth import DEFAULT_BROKER_URL, DEFAULT_MIN_TTL, BrokerAuth
from broker.client.errors import (
    BrokerClientError,
    BrokerConfigError,
    BrokerDenied,
    BrokerInvalidRequest,
    BrokerUnreachable,
    BrokerUpstreamError,
)

EXIT_OK = 0
EXIT_FAILED = 1  # anything else: an unexpected answer, a rate limit, a broker bug
EXIT_USAGE = 2
EXIT_DENIED = 3
EXIT_UNREACHABLE = 4
EXIT_UPSTREAM = 5

_EPILOG = f"""\
environment:
  BROKER_URL        the broker (default {DEFAULT_BROKER_URL})
  BROKER_API_KEY    the caller's API key (not needed with --jwt-file)

exit codes:
  0  the token was printed
  1  any other failure (an unexpected answer, a rate limit)
  2  usage: bad arguments, no credential, a malformed realm or a min_ttl
     the realm's tokens cannot meet
  3  denied: unknown credential, realm not allowed, or no such realm (401/403/404)
  4  the broker is unreachable (no answer, or a proxy answered for it)
  5  the broker's IdP or secret store is failing (502/503 from the broker)
"""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `token` on the `broker` command's sub-commands."""
    parser = commands.add_parser(
        "token",
        help="print a realm's Atlas token (caller key from BROKER_API_KEY)",
        description="Print an Atlas API token for REALM, obtained from the broker.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("realm", metavar="REALM", help="the realm whose token to print")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the broker's JSON answer (token, expires_in, expires_at, realm)",
    )
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
    try:
        auth = BrokerAuth(
            env.get("BROKER_URL") or DEFAULT_BROKER_URL,
            args.realm,
            api_key=None if args.jwt_file else env.get("BROKER_API_KEY") or None,
            jwt_file=args.jwt_file or None,
            min_ttl=args.min_ttl,
            timeout=args.timeout,
        )
    except BrokerConfigError as exc:
        missing = not args.jwt_file and not env.get("BROKER_API_KEY")
        print(
            f"broker token: {'set BROKER_API_KEY or pass --jwt-file' if missing else exc}", file=err
        )
        return EXIT_USAGE
    try:
        token = auth.token()
    except BrokerClientError as exc:
        print(f"broker token: {exc}", file=err)
        return exit_code(exc)
    print(json.dumps(token.as_json()) if args.json else token.access_token, file=out)
    return EXIT_OK


def exit_code(exc: BrokerClientError) -> int:
    """The documented exit code of an SDK error."""
    if isinstance(exc, BrokerConfigError | BrokerInvalidRequest):
        return EXIT_USAGE
    if isinstance(exc, BrokerDenied):
        return EXIT_DENIED
    if isinstance(exc, BrokerUnreachable):
        return EXIT_UNREACHABLE
    if isinstance(exc, BrokerUpstreamError):
        return EXIT_UPSTREAM
    return EXIT_FAILED
