"""`broker serve`: run the broker, configured by BROKER_* variables (or BROKER_CONFIG)."""

from __future__ import annotations

import argparse
import sys

from broker.adapters.policy_file import read_policy
from broker.adapters.prometheus_workers import shared_metrics_dir
from broker.cli._common import EXIT_USAGE, Commands
from broker.core.policy import PolicyError
from broker.logs import configure_logging
from broker.settings import Settings, SettingsError, load_settings


def add_parser(commands: Commands) -> None:
    """Register `serve` on the `broker` command's sub-commands."""
    parser = commands.add_parser("serve", help="run the broker (configured by BROKER_* variables)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return serve()


def serve() -> int:
    try:
        settings = load_settings()
        if settings.policy_file is not None:
            read_policy(settings.policy_file)
    except (SettingsError, PolicyError) as exc:
        print(f"broker: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_level)
    with shared_metrics_dir(settings.workers):
        return _run(settings)


def _run(settings: Settings) -> int:
    from broker.http.server import serve as run_listener

    return run_listener(settings)
