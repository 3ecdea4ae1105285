"""`broker policy check FILE`: validate a caller policy as the broker would, without a broker.

    broker policy check policy.yaml && kubectl apply -f policy-configmap.yaml

Exit 0 when the broker would take the file, 1 (with the offending entry named) when it
would refuse it; an empty file counts as refused, as a running broker refuses it on reload.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from broker.adapters.policy_file import read_policy
from broker.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    Commands,
    add_json_flag,
    print_json,
)
from broker.core.policy import PolicyError


def add_parser(commands: Commands) -> None:
    """Register `policy check` on the `broker` command's sub-commands."""
    policy = commands.add_parser("policy", help="work with caller policy files")
    actions = policy.add_subparsers(dest="policy_command", required=True)
    check = actions.add_parser(
        "check",
        help="validate a policy file as the broker would",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("file", metavar="FILE", type=Path, help="the policy YAML file")
    add_json_flag(check, 'print {"file", "valid", "callers" or "error"} as one JSON object')
    check.set_defaults(run=run_check)


def run_check(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    output = out or sys.stdout
    try:
        policy = read_policy(args.file, allow_empty=False)
    except PolicyError as exc:
        if args.json:
            print_json({"file": str(args.file), "valid": False, "error": str(exc)}, out=output)
        else:
            print(f"broker policy check: {exc}", file=sys.stderr)
        return EXIT_FAILED
    callers: list[dict[str, Any]] = [
        {"name": entry.name, "realms": list(entry.realms), "roles": list(entry.roles)}
        for entry in policy.spec.callers
    ]
    if args.json:
        print_json({"file": str(args.file), "valid": True, "callers": callers}, out=output)
    else:
        names = ", ".join(caller["name"] for caller in callers) or "none"
        output.write(f"{args.file}: valid, {len(callers)} callers ({names})\n")
    return EXIT_OK
