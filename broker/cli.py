"""The `broker` command: `serve` runs the broker, `dev` the whole stack on loopback."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from broker import audit_cli, keygen
from broker.adapters.policy_file import read_policy
from broker.adapters.prometheus_workers import shared_metrics_dir
from broker.core.policy import PolicyError
from broker.logs import configure_logging
from broker.settings import Settings, SettingsError, load_settings


def serve() -> int:
    try:
        settings = load_settings()
        if settings.policy_file is not None:
            read_policy(settings.policy_file)
    except (SettingsError, PolicyError) as exc:
        print(f"broker: invalid configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    with shared_metrics_dir(settings.workers):
        return _run(settings)


def _run(settings: Settings) -> int:
    from broker.http.server import serve as run_listener

    return run_listener(settings)


def write_openapi(output: Path | None) -> int:
    """The app's OpenAPI description, as committed in openapi/openapi.json."""
    from broker.http.app import create_app
    from broker.http.openapi import render
    from broker.settings import Settings

    text = render(create_app(Settings()).openapi())
    if output is None:
        sys.stdout.write(text)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="broker", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the broker (configured by BROKER_* variables)")
    dev = commands.add_parser(
        "dev", help="start OpenBao, the development IdP and the broker on loopback"
    )
    dev.add_argument("--port", type=int, default=8080, help="broker port (0 picks a free one)")
    dev.add_argument(
        "--check-only",
        action="store_true",
        help="start the stack, fetch one token through the broker, stop",
    )
    spec = commands.add_parser("openapi", help="print or write the OpenAPI description")
    spec.add_argument("--output", type=Path, help="write to this file instead of stdout")
    from broker.client import cli as token_cli

    token_cli.add_parser(commands)
    keygen.add_parser(commands)
    audit_cli.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "keygen":
        return keygen.run(args)
    if args.command == "audit":
        return audit_cli.run(args)
    if args.command == "token":
        return token_cli.run(args)
    if args.command == "serve":
        return serve()
    if args.command == "openapi":
        return write_openapi(args.output)
    from broker.devstack.dev import run_dev

    return run_dev(port=args.port, check_only=args.check_only)
