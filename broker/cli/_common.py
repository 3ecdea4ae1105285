"""What every `broker` sub-command shares: exit codes, `--json`, and the SDK client.

Exit codes, the same for every command:

    0  done
    1  anything else (an unexpected answer, a rate limit, an invalid file)
    2  usage: bad arguments, no credential, a request the broker calls malformed (400/422)
    3  denied: unknown credential, not allowed, or no such realm (401/403/404)
    4  the broker is unreachable (no answer, or a proxy answered for it)
    5  the broker's IdP or secret store is failing (502/503 from the broker)

Everything that talks to the broker goes through the SDK's `BrokerClient`, so there is
one HTTP client and one error mapping.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO, TypeAlias

from atlas_broker_client import (
    DEFAULT_BROKER_URL,
    BrokerClient,
    BrokerClientError,
    BrokerConfigError,
    BrokerDenied,
    BrokerInvalidRequest,
    BrokerUnreachable,
    BrokerUpstreamError,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DENIED = 3
EXIT_UNREACHABLE = 4
EXIT_UPSTREAM = 5

# A string: argparse's action class is generic only to type checkers.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

EXIT_CODES_HELP = """\
exit codes:
  0  done
  1  any other failure (an unexpected answer, a rate limit)
  2  usage: bad arguments, no credential, a request the broker calls malformed
  3  denied: unknown credential, not allowed, or no such realm (401/403/404)
  4  the broker is unreachable (no answer, or a proxy answered for it)
  5  the broker's IdP or secret store is failing (502/503 from the broker)
"""

CLIENT_ENV_HELP = f"""\
environment:
  BROKER_URL        the broker (default {DEFAULT_BROKER_URL})
  BROKER_API_KEY    the caller's API key (or BROKER_JWT_FILE: a workload JWT file)
"""


class UsageError(Exception):
    """Arguments or environment that cannot make a request: one line, exit 2."""


def add_json_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--json", action="store_true", help=help_text)


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


def fail(command: str, exc: BrokerClientError, *, err: TextIO | None = None) -> int:
    """Report an SDK error in one line (its message holds no secret); its exit code."""
    print(f"broker {command}: {exc}", file=err or sys.stderr)
    return exit_code(exc)


def client_from_env(
    *, timeout: float = 15.0, environ: Mapping[str, str] | None = None
) -> BrokerClient:
    """The SDK client configured by BROKER_URL and BROKER_API_KEY / BROKER_JWT_FILE."""
    env = os.environ if environ is None else environ
    if not env.get("BROKER_API_KEY") and not env.get("BROKER_JWT_FILE"):
        raise UsageError("set BROKER_API_KEY (or BROKER_JWT_FILE) to the caller's credential")
    try:
        return BrokerClient.from_env(timeout=timeout, environ=env)
    except BrokerConfigError as exc:
        raise UsageError(str(exc)) from None


def print_json(value: Any, *, out: TextIO | None = None) -> None:
    (out or sys.stdout).write(json.dumps(value, separators=(",", ":")) + "\n")
