"""Attacker position: a workload issuer the broker trusts (another cluster's API server),
or whoever holds its signing key. It may mint any `sub` it likes; it must still only ever
act as the callers bound to it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import httpx
import pytest

from atlas_broker_dev.servers import BrokerServer
from callers import PolicyWriter, policy_path
from polling import wait_for
from stack import Realm, Stack, bearer
from workload_issuer import WorkloadIssuer

SUBJECT = "system:serviceaccount:payments:ledger"


@pytest.fixture(scope="module")
def policy(
    module_stack: Stack, issuer: WorkloadIssuer, other_issuer: WorkloadIssuer
) -> PolicyWriter:
    """Two trusted issuers; `ledger` is bound to the first one."""
    writer = PolicyWriter(policy_path(module_stack), module_stack.leak_watch)
    writer.jwt_issuers += [issuer.spec(), other_issuer.spec()]
    writer.subject_caller("ledger", SUBJECT, realms=("*",), issuer=issuer.issuer)
    writer.write()
    return writer


@pytest.fixture(scope="module")
def broker(module_stack: Stack, policy: PolicyWriter) -> BrokerServer:
    return module_stack.start_broker(BROKER_POLICY_FILE=str(policy.path))


@pytest.fixture(scope="module")
def realm(module_stack: Stack) -> Realm:
    return module_stack.new_realm("issuer-bound")


def token_status(stack: Stack, broker: BrokerServer, realm: Realm, jwt: str) -> int:
    stack.leak_watch.add(jwt)
    response = httpx.get(
        f"{broker.url}/v1/realms/{realm.name}/token", headers=bearer(jwt), timeout=30
    )
    stack.served_tokens(response)
    return response.status_code


def test_the_bound_issuers_jwt_gets_a_token(
    module_stack: Stack, broker: BrokerServer, realm: Realm, issuer: WorkloadIssuer
) -> None:
    """The caller's own issuer's JWT for its subject is served."""
    assert 200 == token_status(module_stack, broker, realm, issuer.token(SUBJECT))


def test_another_trusted_issuers_jwt_with_the_same_subject_is_401(
    module_stack: Stack, broker: BrokerServer, realm: Realm, other_issuer: WorkloadIssuer
) -> None:
    """A second trusted issuer minting the first cluster's `sub` does not become its caller."""
    assert 401 == token_status(module_stack, broker, realm, other_issuer.token(SUBJECT))


def test_an_unbound_entry_beside_two_issuers_refuses_start_up(
    stack: Stack,
    issuer: WorkloadIssuer,
    other_issuer: WorkloadIssuer,
    refused_start: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    """With two issuers, a workload entry without `jwt_issuer` stops start-up with one line."""
    writer = PolicyWriter(stack.log_dir / "ambiguous.yaml", stack.leak_watch)
    writer.jwt_issuers += [issuer.spec(), other_issuer.spec()]
    writer.subject_caller("ledger", SUBJECT, realms=("*",))
    done = refused_start(BROKER_POLICY_FILE=str(writer.write()))
    lines = done.stderr.strip().splitlines()
    assert (2, 1) == (done.returncode, len(lines)), done.stderr
    assert "jwt_issuer" in lines[0]


def test_an_ambiguous_reload_keeps_the_policy_in_force(
    module_stack: Stack,
    broker: BrokerServer,
    policy: PolicyWriter,
    realm: Realm,
    issuer: WorkloadIssuer,
) -> None:
    """A reloaded file with an unbound entry beside two issuers is rejected; callers keep
    working as before."""
    ambiguous = PolicyWriter(policy.path, module_stack.leak_watch)
    ambiguous.jwt_issuers += policy.jwt_issuers
    ambiguous.subject_caller("ledger", SUBJECT, realms=("*",))
    try:
        ambiguous.write()
        statuses: list[int] = []

        def rejected_after_a_request() -> bool:
            # The file is looked at when a request needs the policy.
            statuses.append(token_status(module_stack, broker, realm, issuer.token(SUBJECT)))
            return "policy file rejected" in broker.process.log_path.read_text()

        wait_for(rejected_after_a_request, timeout=15, message="the policy was not rejected")
        assert 200 == token_status(module_stack, broker, realm, issuer.token(SUBJECT))
        assert {200} == set(statuses)
    finally:
        policy.write()


def test_keys_that_cannot_be_refreshed_fail_closed_after_the_grace(
    stack: Stack, realm: Realm
) -> None:
    """Issuer keys past their max age (2 s here) that cannot be fetched again are trusted
    for BROKER_JWKS_STALE_GRACE more (8 s), then the workload's calls get 503."""
    vanishing = WorkloadIssuer().start()
    writer = PolicyWriter(stack.log_dir / "stale.yaml", stack.leak_watch)
    writer.jwt_issuers.append(vanishing.spec())
    writer.subject_caller("ledger", SUBJECT, realms=("*",))
    broker = stack.start_broker(
        BROKER_POLICY_FILE=str(writer.write()),
        BROKER_JWKS_MAX_AGE="2",
        BROKER_JWKS_STALE_GRACE="8",
    )
    tokens = [vanishing.token(SUBJECT) for _ in range(2)]
    try:
        assert 200 == token_status(stack, broker, realm, tokens[0])
    finally:
        vanishing.stop()
    assert 200 == token_status(stack, broker, realm, tokens[1])  # within max age and grace
    statuses: list[int] = []

    def failed_closed() -> bool:
        statuses.append(token_status(stack, broker, realm, tokens[1]))
        return statuses[-1] != 200

    wait_for(failed_closed, timeout=40, message="stale keys were trusted past the grace")
    assert 503 == statuses[-1]
