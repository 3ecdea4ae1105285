"""The `broker` command: one module per command group.

    serve      run the broker                     (serve.py)
    dev        the whole stack on loopback        (dev.py, needs atlas-broker-dev)
    token      print a realm's token              (token.py)
    realms, rotate, evict                         (admin.py)
    audit      query or follow the audit trail    (audit.py)
    keygen     a new caller key and its entry     (keygen.py)
    policy     check a caller policy file         (policy.py)
    openapi    the API description                (openapi.py)

Commands that talk to a broker use the SDK (`atlas_broker_client`); exit codes and
`--json` are shared (`_common.py`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from broker import __version__
from broker.cli import admin, audit, dev, keygen, openapi, policy, serve, token
from broker.cli._common import EXIT_CODES_HELP


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="broker",
        description="Atlas Token Broker: run it, try it, and administer it.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"broker {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (serve, dev, token, admin, audit, keygen, policy, openapi):
        group.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)
