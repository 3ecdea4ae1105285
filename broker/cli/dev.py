"""`broker dev`: OpenBao, the development IdP and the broker on loopback, for trying it.

The pieces live in the development distribution (`atlas-broker-dev`, which
`scripts/bootstrap` installs); the production wheel and image do not hold them.
"""

from __future__ import annotations

import argparse
import sys

from broker.cli._common import EXIT_FAILED, Commands, add_json_flag

NOT_INSTALLED = (
    "broker dev: the development pieces are not installed "
    "(run scripts/bootstrap, or pip install -e ./dev from a checkout)"
)


def add_parser(commands: Commands) -> None:
    """Register `dev` on the `broker` command's sub-commands."""
    parser = commands.add_parser(
        "dev", help="start OpenBao, the development IdP and the broker on loopback"
    )
    parser.add_argument("--port", type=int, default=8080, help="broker port (0 picks a free one)")
    parser.add_argument(
        "--check-only",
        action="store_true",
        help="start the stack, fetch one token through the broker, stop",
    )
    add_json_flag(
        parser, "print the broker URL, realm and demo API key as JSON instead of a curl line"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        from atlas_broker_dev.run import run_dev
    except ImportError:
        print(NOT_INSTALLED, file=sys.stderr)
        return EXIT_FAILED
    return run_dev(port=args.port, check_only=args.check_only, as_json=args.json)
