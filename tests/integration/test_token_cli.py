"""`broker token REALM`: prints a realm's token for shell scripts, with exit codes that tell
"denied", "broker unreachable" and "IdP failing" apart, and never prints the key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest

from atlas_broker_dev.processes import free_port
from atlas_broker_dev.servers import BrokerServer
from stack import Stack


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def broker(module_stack: Stack) -> BrokerServer:
    return module_stack.start_broker()


def broker_token(stack: Stack, *args: str, url: str | None, key: str | None = None) -> Run:
    """Run `broker token ARGS` as a shell script would, with the key in the environment."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("BROKER_")}
    if url is not None:
        env["BROKER_URL"] = url
    if key is not None:
        env["BROKER_API_KEY"] = key
    done = subprocess.run(
        [sys.executable, "-m", "broker", "token", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    run = Run(done.returncode, done.stdout, done.stderr)
    if run.code == 0 and "--help" not in args:
        token = json.loads(run.stdout)["access_token"] if "--json" in args else run.stdout.strip()
        stack.leak_watch.add(token)
    if key is not None:
        assert key not in run.stdout + run.stderr
    return run


def test_prints_the_token_and_exits_0(module_stack: Stack, broker: BrokerServer) -> None:
    """The token alone is printed on stdout, ready for $(broker token REALM)."""
    realm = module_stack.new_realm("cli")
    run = broker_token(module_stack, realm.name, url=broker.url, key=module_stack.keys.everything)
    assert (0, "") == (run.code, run.stderr)
    claims = jwt.decode(run.stdout.strip(), options={"verify_signature": False})
    assert realm.client_id == claims["azp"]
    assert 1 == run.stdout.count("\n")


def test_json_prints_the_broker_answer(module_stack: Stack, broker: BrokerServer) -> None:
    """--json prints the broker's token answer as one JSON object."""
    realm = module_stack.new_realm("cli")
    run = broker_token(
        module_stack, realm.name, "--json", url=broker.url, key=module_stack.keys.everything
    )
    assert 0 == run.code
    body = json.loads(run.stdout)
    assert {"access_token", "token_type", "expires_in", "expires_at", "realm"} == set(body)
    assert realm.name == body["realm"]


def test_help_documents_every_exit_code(module_stack: Stack) -> None:
    """--help lists the exit codes 0 to 5."""
    run = broker_token(module_stack, "--help", url=None)
    assert 0 == run.code
    for line in ("0  the token", "2  usage", "3  denied", "4  the broker is unreachable", "5  "):
        assert line in run.stdout


@pytest.mark.parametrize(
    ("case", "args"),
    [
        ("malformed realm", ["-bad-realm"]),
        ("min_ttl not a number", ["acme", "--min-ttl", "soon"]),
        ("no realm", []),
    ],
)
def test_bad_arguments_exit_2(module_stack: Stack, case: str, args: list[str]) -> None:
    """Arguments that cannot make a request: exit 2 before the broker is asked."""
    run = broker_token(module_stack, *args, url="http://127.0.0.1:1", key="k" * 24)
    assert 2 == run.code


def test_missing_key_exits_2(module_stack: Stack, broker: BrokerServer) -> None:
    """Neither BROKER_API_KEY nor --jwt-file: exit 2 with a message saying so."""
    run = broker_token(module_stack, "acme", url=broker.url)
    assert 2 == run.code
    assert "BROKER_API_KEY" in run.stderr


def test_min_ttl_the_realm_cannot_meet_exits_2(module_stack: Stack, broker: BrokerServer) -> None:
    """A min_ttl longer than the realm's tokens live (the broker's 422): exit 2."""
    realm = module_stack.new_realm("cli")
    run = broker_token(
        module_stack,
        realm.name,
        "--min-ttl",
        "86400",
        url=broker.url,
        key=module_stack.keys.everything,
    )
    assert 2 == run.code


@pytest.mark.parametrize(
    ("case", "realm", "which_key"),
    [
        ("unknown key (401)", "acme", "unknown"),
        ("realm not allowed (403)", "some-other-realm", "limited"),
        ("no such realm (404)", "absent-from-vault", "everything"),
    ],
)
def test_denied_exits_3(
    module_stack: Stack, broker: BrokerServer, case: str, realm: str, which_key: str
) -> None:
    """A refusal by the broker, whatever its reason: exit 3, nothing on stdout."""
    key = {
        "unknown": "cli-unknown-key-" + "u" * 20,
        "limited": module_stack.keys.limited,
        "everything": module_stack.keys.everything,
    }[which_key]
    run = broker_token(module_stack, realm, url=broker.url, key=key)
    assert (3, "") == (run.code, run.stdout)


def test_jwt_file_is_used_instead_of_the_key(
    module_stack: Stack, broker: BrokerServer, tmp_path: Path
) -> None:
    """--jwt-file sends the file's JWT; one the broker does not accept is denied (3)."""
    jwt_file = tmp_path / "token"
    secret_jwt = "eyJ.not-a-workload-jwt-" + "j" * 20
    jwt_file.write_text(secret_jwt)
    run = broker_token(module_stack, "acme", "--jwt-file", str(jwt_file), url=broker.url)
    assert 3 == run.code
    assert secret_jwt not in run.stdout + run.stderr


def test_broker_unreachable_exits_4(module_stack: Stack) -> None:
    """No broker listening at BROKER_URL: exit 4."""
    run = broker_token(
        module_stack, "acme", url=f"http://127.0.0.1:{free_port()}", key="cli-key-" + "k" * 20
    )
    assert 4 == run.code


def test_idp_refusing_exits_5(module_stack: Stack, broker: BrokerServer) -> None:
    """The IdP answering garbage (the broker's 502): exit 5."""
    realm = module_stack.new_realm("cli")
    module_stack.set_fault(realm.name, "status_500")
    try:
        run = broker_token(
            module_stack, realm.name, url=broker.url, key=module_stack.keys.everything
        )
    finally:
        module_stack.idp_control("DELETE", "/faults")
    assert 5 == run.code


def test_idp_unreachable_exits_5(stack: Stack) -> None:
    """The broker's IdP not answering (the broker's 503): exit 5."""
    broker = stack.start_broker(BROKER_IDP_URL=f"http://127.0.0.1:{free_port()}")
    run = broker_token(
        stack, stack.new_realm("cli").name, url=broker.url, key=stack.keys.everything
    )
    assert 5 == run.code
