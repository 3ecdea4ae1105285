"""`broker keygen NAME`: a new caller API key, printed once, and its policy entry.

    broker keygen billing-api --realms acme,globex
    broker keygen platform-audit --roles auditor
    broker keygen ci-bot --realms acme --json     {"api_key": ..., "policy_entry": ...}

The key is 256 random bits (`atb_` and 43 base64url characters; the prefix lets secret
scanners recognise it). It is printed only this once: the broker never stores it, the
policy file holds its SHA-256.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from typing import Any, TextIO

import yaml
from pydantic import ValidationError

from broker.cli._common import EXIT_OK, EXIT_USAGE, Commands, add_json_flag, print_json
from broker.core import rules
from broker.core.policy import CallerSpec, PolicyError, hash_key

KEY_PREFIX = "atb_"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def policy_entry(name: str, key: str, *, realms: list[str], roles: list[str]) -> dict[str, Any]:
    """The `callers:` entry for `key`, validated as the broker will validate it."""
    entry: dict[str, Any] = {"name": name, "api_key_sha256": hash_key(key)}
    if realms:
        entry["realms"] = realms
    if roles:
        entry["roles"] = roles
    try:
        CallerSpec.model_validate(entry)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "entry"
        raise PolicyError(f"{where}: {first['msg']}") from None
    return entry


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        if name != "*" and not rules.is_valid_realm(name):
            raise argparse.ArgumentTypeError(f"not a realm name: {name!r}")
    return names


def _roles(text: str) -> list[str]:
    roles = [part.strip() for part in text.split(",") if part.strip()]
    for role in roles:
        if role not in ("auditor", "admin"):
            raise argparse.ArgumentTypeError(f"unknown role {role!r} (auditor, admin)")
    return roles


def add_parser(commands: Commands) -> None:
    """Register `keygen` on the `broker` command's sub-commands."""
    parser = commands.add_parser(
        "keygen",
        help="print a new caller API key (once) and its policy entry",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", help="the caller's name in the policy")
    parser.add_argument(
        "--realms", type=_names, default=[], help="comma-separated realms ('*' for all)"
    )
    parser.add_argument("--roles", type=_roles, default=[], help="comma-separated: auditor, admin")
    add_json_flag(parser, 'print {"api_key": ..., "policy_entry": {...}} as one JSON object')
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    key = new_key()
    try:
        entry = policy_entry(args.name, key, realms=args.realms, roles=args.roles)
    except PolicyError as exc:
        print(f"broker keygen: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print_json({"api_key": key, "policy_entry": entry}, out=out)
        return EXIT_OK
    out.write("# API key, shown only now; give it to the caller as a secret:\n")
    out.write(f"{key}\n")
    out.write("# policy entry, for the policy file's `callers:` list:\n")
    out.write(yaml.safe_dump([entry], sort_keys=False, default_flow_style=None))
    out.flush()
    return EXIT_OK
