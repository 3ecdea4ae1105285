"""The caller policy follows its file without a restart; a broken file changes nothing."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from atlas_broker_dev.servers import BrokerServer
from callers import PolicyWriter
from polling import wait_for
from stack import Realm, Stack, bearer


@pytest.fixture
def policy(stack: Stack) -> PolicyWriter:
    return PolicyWriter(stack.log_dir / "policy" / "policy.yaml", stack.leak_watch)


@pytest.fixture
def realm(stack: Stack) -> Realm:
    return stack.new_realm("reload")


def status(stack: Stack, broker: BrokerServer, realm: Realm, key: str) -> int:
    response = httpx.get(
        f"{broker.url}/v1/realms/{realm.name}/token", headers=bearer(key), timeout=30
    )
    stack.served_tokens(response)
    return response.status_code


def logged(broker: BrokerServer, text: str) -> Callable[[], bool]:
    return lambda: text in broker.process.log_path.read_text()


def test_new_caller_works_without_a_restart(
    stack: Stack, policy: PolicyWriter, realm: Realm
) -> None:
    """A caller added to the file is served by the running broker."""
    policy.key_caller("first", realms=("*",))
    broker = stack.start_broker(BROKER_POLICY_FILE=str(policy.write()))
    newcomer = policy.key_caller("newcomer", realms=("*",))
    policy.write()
    wait_for(lambda: status(stack, broker, realm, newcomer) == 200, message="newcomer never let in")


def test_removed_caller_is_refused_after_the_reload(
    stack: Stack, policy: PolicyWriter, realm: Realm
) -> None:
    """A caller taken out of the file gets 401 from the running broker."""
    leaving = policy.key_caller("leaving", realms=("*",))
    broker = stack.start_broker(BROKER_POLICY_FILE=str(policy.write()))
    assert 200 == status(stack, broker, realm, leaving)
    policy.callers.clear()
    policy.key_caller("staying", realms=("*",))
    policy.write()
    wait_for(lambda: status(stack, broker, realm, leaving) == 401, message="leaver never shut out")


@pytest.mark.parametrize(
    "broken",
    [
        "callers: [oops\n",  # not YAML
        "callers:\n  - name: no-credential\n",  # invalid entry
        "",  # empty: a file caught mid-write
    ],
    ids=["unparsable", "invalid", "empty"],
)
def test_broken_file_leaves_the_old_policy_in_force(
    stack: Stack, policy: PolicyWriter, realm: Realm, broken: str
) -> None:
    """A new file that does not parse or validate is rejected (logged) and every caller of
    the policy in force keeps working."""
    key = policy.key_caller("steady", realms=("*",))
    broker = stack.start_broker(BROKER_POLICY_FILE=str(policy.write()))
    assert 200 == status(stack, broker, realm, key)
    policy.write(broken)
    statuses: list[int] = []

    def rejected() -> bool:
        # The file is looked at when a request needs the policy, at most once a second.
        statuses.append(status(stack, broker, realm, key))
        return logged(broker, "policy file rejected")()

    wait_for(rejected, message="broken policy never rejected")
    assert {200} == {*statuses, status(stack, broker, realm, key)}


def test_configmap_style_symlink_swap_is_followed(
    stack: Stack, policy: PolicyWriter, realm: Realm
) -> None:
    """A Kubernetes ConfigMap update (the `..data` symlink swapped to a new directory) is
    picked up like a rewritten file."""
    mount = policy.path.parent
    first = policy.key_caller("first", realms=("*",))
    version_1 = _write_version(mount, "v1", policy)
    (mount / "..data").symlink_to(version_1.name)
    (mount / "current.yaml").symlink_to("..data/policy.yaml")
    broker = stack.start_broker(BROKER_POLICY_FILE=str(mount / "current.yaml"))
    assert 200 == status(stack, broker, realm, first)
    second = policy.key_caller("second", realms=("*",))
    version_2 = _write_version(mount, "v2", policy)
    staged = mount / "..data_tmp"
    staged.symlink_to(version_2.name)
    os.replace(staged, mount / "..data")
    wait_for(
        lambda: status(stack, broker, realm, second) == 200, message="symlink swap not followed"
    )


def _write_version(mount: Path, name: str, policy: PolicyWriter) -> Path:
    directory = mount / f"..{name}"
    directory.mkdir(parents=True)
    PolicyWriter(directory / "policy.yaml", policy.leak_watch, policy.callers).write()
    return directory
