"""`broker realms`, `broker rotate`, `broker evict` and `broker policy check` against a
running broker, and `broker --version`: the same exit codes as every command (0 ok,
2 usage, 3 denied, 4 unreachable, 5 IdP or Vault failing) and `--json` output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from atlas_broker_dev.processes import free_port
from atlas_broker_dev.servers import BrokerServer
from stack import CallerKeys, Stack


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, object]:
        body: dict[str, object] = json.loads(self.stdout)
        return body


def broker_cli(*args: str, url: str | None = None, key: str | None = None) -> Run:
    """Run `broker ARGS` as an operator would, with the key in the environment."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("BROKER_")}
    if url is not None:
        env["BROKER_URL"] = url
    if key is not None:
        env["BROKER_API_KEY"] = key
    done = subprocess.run(
        [sys.executable, "-m", "broker", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if key is not None:
        assert key not in done.stdout + done.stderr
    return Run(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def broker(module_stack: Stack) -> BrokerServer:
    return module_stack.start_broker()


def test_realms_shows_an_admin_each_realm_with_its_status(
    module_stack: Stack, broker: BrokerServer
) -> None:
    """--json prints the broker's list; a realm just served is cached, with its expiry."""
    realm = module_stack.new_realm("admin-cli")
    assert 200 == module_stack.get_token(broker.url, realm.name).status_code

    run = broker_cli("realms", "--json", url=broker.url, key=module_stack.keys.admin)

    assert 0 == run.code, run.stderr
    realms = run.json()["realms"]
    assert isinstance(realms, list)
    (entry,) = [e for e in realms if e["realm"] == realm.name]
    assert (True, 1) == (entry["cached"], entry["credential_version"])
    assert entry["expires_at"]


def test_realms_table_has_a_header_and_a_row_per_realm(
    module_stack: Stack, broker: BrokerServer
) -> None:
    """Without --json an admin gets a table: a header, and the served realm marked cached."""
    realm = module_stack.new_realm("admin-cli")
    assert 200 == module_stack.get_token(broker.url, realm.name).status_code

    run = broker_cli("realms", url=broker.url, key=module_stack.keys.admin)

    assert 0 == run.code, run.stderr
    header, *rows = run.stdout.splitlines()
    assert header.split()[:3] == ["REALM", "CACHED", "EXPIRES_AT"]
    (row,) = [line for line in rows if line.split()[0] == realm.name]
    assert ["yes", "1"] == [row.split()[1], row.split()[4]]


def test_realms_prints_a_plain_callers_realm_names(
    module_stack: Stack, broker: BrokerServer
) -> None:
    """A caller without a role gets its realm names, one a line."""
    run = broker_cli("realms", url=broker.url, key=module_stack.keys.limited)

    assert (0, f"{CallerKeys.LIMITED_REALM}\n") == (run.code, run.stdout)


def test_rotate_fetches_a_new_token_and_prints_the_status(
    module_stack: Stack, broker: BrokerServer
) -> None:
    """rotate re-reads the secret and fetches anew from the IdP; --json is the realm's status."""
    realm = module_stack.new_realm("admin-cli")
    assert 200 == module_stack.get_token(broker.url, realm.name).status_code
    before = module_stack.idp_requests(realm.name)

    run = broker_cli("rotate", realm.name, "--json", url=broker.url, key=module_stack.keys.admin)

    assert 0 == run.code, run.stderr
    assert (realm.name, True) == (run.json()["realm"], run.json()["cached"])
    assert before + 1 == module_stack.idp_requests(realm.name)


def test_evict_makes_the_next_token_come_from_the_idp(
    module_stack: Stack, broker: BrokerServer
) -> None:
    """After evict the realm's next token is fetched from the IdP, not served from cache."""
    realm = module_stack.new_realm("admin-cli")
    assert 200 == module_stack.get_token(broker.url, realm.name).status_code
    before = module_stack.idp_requests(realm.name)

    run = broker_cli("evict", realm.name, "--json", url=broker.url, key=module_stack.keys.admin)

    assert (0, {"realm": realm.name, "evicted": True}) == (run.code, run.json())
    assert 200 == module_stack.get_token(broker.url, realm.name).status_code
    assert before + 1 == module_stack.idp_requests(realm.name)


@pytest.mark.parametrize("command", ["rotate", "evict"])
def test_admin_commands_deny_a_caller_without_the_role(
    module_stack: Stack, broker: BrokerServer, command: str
) -> None:
    """A caller allowed the realm but not an admin: exit 3 and the broker's 403."""
    realm = module_stack.new_realm("admin-cli")

    run = broker_cli(command, realm.name, url=broker.url, key=module_stack.keys.everything)

    assert (3, True, "") == (run.code, "HTTP 403" in run.stderr, run.stdout)


def test_rotate_of_a_realm_without_credentials_exits_3(
    module_stack: Stack, broker: BrokerServer
) -> None:
    """No secret in Vault for the realm (the broker's 404): exit 3."""
    run = broker_cli("rotate", "absent-from-vault", url=broker.url, key=module_stack.keys.admin)

    assert (3, True) == (run.code, "HTTP 404" in run.stderr)


def test_rotate_while_the_idp_fails_exits_5(module_stack: Stack, broker: BrokerServer) -> None:
    """The IdP answering errors (the broker's 502) during a rotation: exit 5."""
    realm = module_stack.new_realm("admin-cli")
    module_stack.set_fault(realm.name, "status_500")
    try:
        run = broker_cli("rotate", realm.name, url=broker.url, key=module_stack.keys.admin)
    finally:
        module_stack.idp_control("DELETE", "/faults")

    assert 5 == run.code, run.stderr


@pytest.mark.parametrize("args", [["realms"], ["rotate", "acme"], ["evict", "acme"]])
def test_admin_commands_exit_4_when_no_broker_answers(args: list[str]) -> None:
    """Nothing listens at BROKER_URL: exit 4."""
    run = broker_cli(*args, url=f"http://127.0.0.1:{free_port()}", key="k" * 32)

    assert 4 == run.code, run.stderr


@pytest.mark.parametrize("args", [["realms"], ["rotate", "acme"], ["evict", "acme"]])
def test_admin_commands_without_a_key_exit_2(broker: BrokerServer, args: list[str]) -> None:
    """No BROKER_API_KEY: exit 2 with a message that names it."""
    run = broker_cli(*args, url=broker.url)

    assert (2, True) == (run.code, "BROKER_API_KEY" in run.stderr)


def test_malformed_realm_exits_2_before_asking_the_broker(module_stack: Stack) -> None:
    """A realm name the broker would refuse: exit 2, and no request is made."""
    run = broker_cli("rotate", "../etc", url=f"http://127.0.0.1:{free_port()}", key="k" * 32)

    assert 2 == run.code


def test_version_is_the_installed_brokers() -> None:
    """--version names the installed server distribution's version (no broker needed)."""
    run = broker_cli("--version")

    assert (0, f"broker {version('atlas-token-broker')}\n") == (run.code, run.stdout)


def test_a_policy_that_check_accepts_is_one_a_broker_serves(
    module_stack: Stack, tmp_path: Path
) -> None:
    """keygen --json's entry passes policy check, and a broker with that file admits the key."""
    realm = module_stack.new_realm("admin-cli")
    made = broker_cli("keygen", "ci-bot", "--realms", realm.name, "--json")
    key, entry = made.json()["api_key"], made.json()["policy_entry"]
    assert isinstance(key, str)
    module_stack.leak_watch.add(key)
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"callers": [entry]}))

    check = broker_cli("policy", "check", str(policy), "--json")

    assert (0, True) == (check.code, check.json()["valid"])
    assert [{"name": "ci-bot", "realms": [realm.name], "roles": []}] == check.json()["callers"]
    broker = module_stack.start_broker(name="policy-checked", BROKER_POLICY_FILE=str(policy))
    assert 200 == module_stack.get_token(broker.url, realm.name, key).status_code


def test_a_policy_that_check_refuses_stops_the_broker(module_stack: Stack, tmp_path: Path) -> None:
    """A caller with no credential fails policy check (exit 1, entry named) and `serve`."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"callers": [{"name": "nobody", "realms": ["acme"]}]}))

    check = broker_cli("policy", "check", str(policy))
    served = subprocess.run(
        [sys.executable, "-m", "broker", "serve"],
        env={**os.environ, **module_stack.broker_env(BROKER_POLICY_FILE=str(policy))},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (1, True) == (check.code, "callers" in check.stderr)
    assert 2 == served.returncode


def test_policy_check_of_a_missing_file_exits_1(tmp_path: Path) -> None:
    """A file that cannot be read is refused with its path named, as JSON too."""
    run = broker_cli("policy", "check", str(tmp_path / "absent.yaml"), "--json")

    assert (1, False) == (run.code, run.json()["valid"])
    assert "absent.yaml" in str(run.json()["error"])
