"""Fixtures of the in-process API layer: one broker per module on the session's OpenBao
and development IdP, with the `memory://` store and a policy of its own."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from inprocess import Api, in_process, settings_for, write_policy
from stack import Stack
from workload_issuer import WorkloadIssuer


@pytest.fixture(scope="module")
def workload_issuer() -> Iterator[WorkloadIssuer]:
    issuer = WorkloadIssuer().start()
    yield issuer
    issuer.stop()


@pytest.fixture(scope="module")
def policy_file(module_stack: Stack) -> Path:
    return module_stack.log_dir / "api-policy.yaml"


@contextlib.asynccontextmanager
async def serving(
    stack: Stack, issuer: WorkloadIssuer, policy_file: Path, **settings: Any
) -> AsyncIterator[Api]:
    realm, limited = stack.new_realm("api"), stack.new_realm("api-limited")
    keys = write_policy(policy_file, stack, issuer, limited.name)
    async with in_process(settings_for(stack, policy_file, **settings)) as client:
        yield Api(client, keys, realm, limited, stack, issuer)


@pytest.fixture(scope="module")
async def api(
    module_stack: Stack, workload_issuer: WorkloadIssuer, policy_file: Path
) -> AsyncIterator[Api]:
    """One in-process broker per module, on the session's OpenBao and IdP, with the
    `memory://` store."""
    async with serving(module_stack, workload_issuer, policy_file) as served:
        yield served


@pytest.fixture(scope="module")
async def redis_api(
    module_stack: Stack, workload_issuer: WorkloadIssuer, policy_file: Path
) -> AsyncIterator[Api]:
    """Like `api`, on the session's Redis: the shared token store, the Redis rate limiter
    and the audit stream."""
    async with serving(
        module_stack, workload_issuer, policy_file, redis_url=module_stack.redis.url
    ) as served:
        yield served
