"""`broker openapi`: the app's OpenAPI description, as committed in openapi/openapi.json."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from broker.cli._common import EXIT_OK, Commands


def add_parser(commands: Commands) -> None:
    """Register `openapi` on the `broker` command's sub-commands."""
    spec = commands.add_parser(
        "openapi", help="print or write the OpenAPI description (it is JSON already)"
    )
    spec.add_argument("--output", type=Path, help="write to this file instead of stdout")
    # Accepted for symmetry with every other command: the description is always JSON.
    spec.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    spec.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from broker.http.app import create_app
    from broker.http.openapi import render
    from broker.settings import Settings

    text = render(create_app(Settings()).openapi())
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
    return EXIT_OK
