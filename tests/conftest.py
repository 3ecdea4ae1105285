"""Fixtures for tests that talk to real servers: OpenBao, Redis, the development IdP and
broker processes, all on 127.0.0.1 and free ports, all stopped by the fixtures."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from atlas_broker_dev.servers import (
    DevIdP,
    OpenBao,
    RedisServer,
    start_dev_idp,
    start_openbao,
    start_redis,
)
from atlas_broker_dev.stack import Caller, write_policy
from stack import CallerKeys, LeakWatch, Stack


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def leak_watch(stack_dir: Path) -> Iterator[LeakWatch]:
    """Every secret the suite hands out; at the end no process log may contain one."""
    watch = LeakWatch()
    yield watch
    leaks = watch.scan(stack_dir)
    assert leaks == [], f"secrets found in process output: {leaks}"


@pytest.fixture(scope="session")
def openbao(stack_dir: Path, leak_watch: LeakWatch) -> Iterator[OpenBao]:
    root_token = secrets.token_urlsafe(24)
    leak_watch.add(root_token)
    bao = start_openbao(stack_dir, root_token=root_token)
    yield bao
    bao.process.stop()


@pytest.fixture(scope="session")
def redis_server(stack_dir: Path) -> Iterator[RedisServer]:
    server = start_redis(stack_dir)
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def idp(stack_dir: Path) -> Iterator[DevIdP]:
    server = start_dev_idp(stack_dir, token_lifetime=3600)
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def caller_keys(stack_dir: Path, leak_watch: LeakWatch) -> CallerKeys:
    keys = CallerKeys(
        everything=secrets.token_urlsafe(32),
        limited=secrets.token_urlsafe(32),
        admin=secrets.token_urlsafe(32),
        policy_file=stack_dir / "policy.yaml",
    )
    leak_watch.add(keys.everything, keys.limited, keys.admin)
    write_policy(
        keys.policy_file,
        [
            Caller("svc-all", keys.everything, realms=["*"]),
            Caller("svc-limited", keys.limited, realms=[CallerKeys.LIMITED_REALM]),
            Caller("secops", keys.admin, realms=["*"], roles=["admin"]),
        ],
    )
    return keys


def _stack(request: pytest.FixtureRequest, stack_dir: Path) -> Stack:
    return Stack(
        log_dir=stack_dir / request.node.name[:80],
        openbao=request.getfixturevalue("openbao"),
        redis=request.getfixturevalue("redis_server"),
        idp=request.getfixturevalue("idp"),
        keys=request.getfixturevalue("caller_keys"),
        leak_watch=request.getfixturevalue("leak_watch"),
    )


@pytest.fixture
def stack(request: pytest.FixtureRequest, stack_dir: Path) -> Iterator[Stack]:
    """The servers, plus broker processes this test starts and the fixture stops."""
    test_stack = _stack(request, stack_dir)
    yield test_stack
    test_stack.close()


@pytest.fixture(scope="module")
def module_stack(request: pytest.FixtureRequest, stack_dir: Path) -> Iterator[Stack]:
    """Like `stack`, for brokers shared by the tests of one module."""
    test_stack = _stack(request, stack_dir)
    yield test_stack
    test_stack.close()
