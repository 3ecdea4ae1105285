"""Fixtures of the in-process API layer: one broker per module on the session's OpenBao
and development IdP, with the `memory://` store and a policy of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

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


@pytest.fixture(scope="module")
async def api(
    module_stack: Stack, workload_issuer: WorkloadIssuer, policy_file: Path
) -> AsyncIterator[Api]:
    """One in-process broker per module, on the session's OpenBao and IdP."""
    realm, limited = module_stack.new_realm("api"), module_stack.new_realm("api-limited")
    keys = write_policy(policy_file, module_stack, workload_issuer, limited.name)
    async with in_process(settings_for(module_stack, policy_file)) as client:
        yield Api(client, keys, realm, limited, module_stack, workload_issuer)
