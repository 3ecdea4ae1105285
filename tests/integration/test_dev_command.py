"""`broker dev`: the whole stack on loopback from one command, a token through the broker
as its self-check, and a clear stop when the broker's port is already taken."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from stack import Stack


def broker_dev(*args: str) -> subprocess.CompletedProcess[str]:
    # The embedded store: the test must not depend on a Redis at localhost:6379.
    env = {name: value for name, value in os.environ.items() if not name.startswith("BROKER_")}
    return subprocess.run(
        [sys.executable, "-m", "broker", "dev", *args],
        env={**env, "BROKER_REDIS_URL": "memory://"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_only_gets_a_token_through_the_broker(stack: Stack) -> None:
    """--check-only --json starts everything, serves the demo realm's token, then stops."""
    done = broker_dev("--port", "0", "--check-only", "--json")

    assert 0 == done.returncode, done.stderr[-3000:]
    details = json.loads(done.stdout)
    stack.leak_watch.add(details["api_key"])
    assert ("demo", True) == (details["realm"], "self-check: got a token" in done.stderr)
    assert details["token_url"] == f"{details['broker_url']}/v1/realms/demo/token"


def test_a_taken_port_stops_it_before_anything_starts(stack: Stack) -> None:
    """A broker already on the port: exit 1 and one message naming the port, no 401."""
    running = stack.start_broker()
    port = running.url.rsplit(":", 1)[1]

    done = broker_dev("--port", port, "--check-only")

    assert (1, "") == (done.returncode, done.stdout)
    assert f"port {port} on 127.0.0.1 is already in use" in done.stderr
    assert "OpenBao" not in done.stderr  # nothing was started
    assert "self-check" not in done.stderr  # not the old "self-check failed: HTTP 401"
    assert running.process.running  # the broker that was there first is untouched
