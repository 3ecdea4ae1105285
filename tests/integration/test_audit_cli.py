"""`broker audit`: the trail through the HTTP API, as JSON lines or a table, and followed."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading

import httpx
import pytest

from atlas_broker_dev.servers import BrokerServer
from audit_helpers import wait_for_stream
from callers import PolicyWriter, policy_path, written_policy
from stack import Realm, Stack, bearer

PREFIX = "audit-cli"


class Keys:
    def __init__(self, policy: PolicyWriter) -> None:
        self.caller = policy.key_caller("svc-cli", realms=("*",))
        self.auditor = policy.key_caller("audit-cli", roles=("auditor",))


@pytest.fixture(scope="module")
def keys(module_stack: Stack) -> Keys:
    return written_policy(module_stack, Keys)


@pytest.fixture(scope="module")
def broker(module_stack: Stack, keys: Keys) -> BrokerServer:
    return module_stack.start_broker(
        BROKER_KEY_PREFIX=PREFIX, BROKER_POLICY_FILE=str(policy_path(module_stack))
    )


@pytest.fixture(scope="module")
def realm(module_stack: Stack, broker: BrokerServer, keys: Keys) -> Realm:
    """A realm with three issued tokens, cli-0 .. cli-2, already in the trail."""
    realm = module_stack.new_realm("cli")
    for i in range(3):
        issue(module_stack, broker, realm, keys.caller, f"cli-{i}")
    events = wait_for_stream(
        module_stack.redis.url,
        PREFIX,
        lambda es: {"cli-0", "cli-1", "cli-2"} <= {e.get("request_id") for e in es},
    )
    assert {"cli-0", "cli-1", "cli-2"} <= {e.get("request_id") for e in events}
    return realm


def issue(stack: Stack, broker: BrokerServer, realm: Realm, key: str, request_id: str) -> None:
    response = httpx.get(
        f"{broker.url}/v1/realms/{realm.name}/token",
        headers={**bearer(key), "X-Request-ID": request_id},
        timeout=30,
    )
    stack.served_tokens(response)
    assert 200 == response.status_code, response.text


def cli_env(broker: BrokerServer, key: str) -> dict[str, str]:
    return {**os.environ, "BROKER_URL": broker.url, "BROKER_API_KEY": key}


def audit_cli(broker: BrokerServer, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker", "audit", *args],
        env=cli_env(broker, key),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_json_lines_come_oldest_first(broker: BrokerServer, keys: Keys, realm: Realm) -> None:
    """--json prints one event per line, the newest last."""
    done = audit_cli(
        broker, keys.auditor, "--json", "--realm", realm.name, "--event", "token.issued"
    )
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert (0, ["cli-0", "cli-1", "cli-2"]) == (done.returncode, [e["request_id"] for e in events])


def test_table_has_a_header_and_a_row_per_event(
    broker: BrokerServer, keys: Keys, realm: Realm
) -> None:
    """Without --json the events are a table: a header, then one row per event."""
    done = audit_cli(broker, keys.auditor, "--realm", realm.name, "--event", "token.issued")
    header, *rows = done.stdout.splitlines()
    assert (["TIME", "EVENT", "CALLER"], ["cli-0", "cli-1", "cli-2"]) == (
        header.split()[:3],
        [row.split()[-1] for row in rows],
    )


def test_limit_shows_the_newest(broker: BrokerServer, keys: Keys, realm: Realm) -> None:
    """--limit N prints the newest N events."""
    done = audit_cli(
        broker,
        keys.auditor,
        "--json",
        "--realm",
        realm.name,
        "--event",
        "token.issued",
        "--limit",
        "2",
    )
    assert ["cli-1", "cli-2"] == [
        json.loads(line)["request_id"] for line in done.stdout.splitlines()
    ]


def test_follow_prints_events_as_they_happen(
    module_stack: Stack, broker: BrokerServer, keys: Keys, realm: Realm
) -> None:
    """--follow prints the trail so far, then each new event once."""
    filters = ["--realm", realm.name, "--event", "token.issued"]
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "broker",
            "audit",
            "--json",
            "--follow",
            "--interval",
            "0.2",
            *filters,
        ],
        env=cli_env(broker, keys.auditor),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as follower:
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(x) for x in follower.stdout or []])
        reader.start()

        def next_id() -> str:
            return str(json.loads(lines.get(timeout=30))["request_id"])

        try:
            seen = [next_id() for _ in range(3)]
            issue(module_stack, broker, realm, keys.caller, "cli-followed")
            seen.append(next_id())
            # Several polls later a second new event arrives: nothing may come in between.
            issue(module_stack, broker, realm, keys.caller, "cli-followed-too")
            seen.append(next_id())
        finally:
            follower.terminate()
            follower.wait(timeout=10)
            reader.join(timeout=10)
    assert ["cli-0", "cli-1", "cli-2", "cli-followed", "cli-followed-too"] == seen


def test_caller_without_the_role_is_told_so(broker: BrokerServer, keys: Keys) -> None:
    """A plain caller's key: exit status 3 (denied) and the broker's 403 on stderr."""
    done = audit_cli(broker, keys.caller)
    assert (3, True) == (done.returncode, "HTTP 403" in done.stderr)
