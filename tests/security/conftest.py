"""Fixtures shared by the attacker-position tests: two workload issuers on loopback, and a
broker start that is expected to be refused. Helpers that are not fixtures (raw sockets, a
broker's memory, an HTTPS broker) are in tests/attacks.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from stack import Stack
from workload_issuer import WorkloadIssuer


@pytest.fixture(scope="module")
def issuer() -> Iterator[WorkloadIssuer]:
    """A trusted workload issuer (a cluster's API server stand-in)."""
    server = WorkloadIssuer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def other_issuer() -> Iterator[WorkloadIssuer]:
    """A second trusted workload issuer: another cluster, with keys of its own."""
    server = WorkloadIssuer().start()
    yield server
    server.stop()


RefusedStart = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def refused_start(stack: Stack) -> RefusedStart:
    """Runs `broker serve` with extra `BROKER_*` variables, expecting it to exit at once."""

    def run(**env: str) -> subprocess.CompletedProcess[str]:
        return _serve_until_exit(stack, env)

    return run


def _serve_until_exit(stack: Stack, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **stack.broker_env(**env), "BROKER_PORT": "0"}
    return subprocess.run(
        [sys.executable, "-m", "broker", "serve"],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
