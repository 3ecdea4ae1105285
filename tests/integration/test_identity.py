"""Workload JWTs against a broker process: a valid one works, each attack is a 401.

The issuer is a JWKS served on 127.0.0.1 by the test process (tests/workload_issuer.py),
standing in for a Kubernetes API server's `/openid/v1/jwks`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from atlas_broker_dev.servers import BrokerServer
from callers import PolicyWriter, policy_path
from stack import Realm, Stack, bearer
from workload_issuer import SigningKey, WorkloadIssuer, tampered

SUBJECT = "system:serviceaccount:payments:ledger"


@pytest.fixture(scope="module")
def issuer() -> Iterator[WorkloadIssuer]:
    server = WorkloadIssuer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def broker(module_stack: Stack, issuer: WorkloadIssuer) -> BrokerServer:
    policy = PolicyWriter(policy_path(module_stack), module_stack.leak_watch)
    policy.subject_caller("ledger", SUBJECT, realms=("*",))
    policy.jwt_issuers.append(issuer.spec())
    return module_stack.start_broker(BROKER_POLICY_FILE=str(policy.write()))


@pytest.fixture(scope="module")
def realm(module_stack: Stack) -> Realm:
    return module_stack.new_realm("workload")


def presented(stack: Stack, broker: BrokerServer, realm: Realm, jwt: str) -> httpx.Response:
    """A token request with `jwt` as the caller's credential."""
    stack.leak_watch.add(jwt)
    response = httpx.get(
        f"{broker.url}/v1/realms/{realm.name}/token", headers=bearer(jwt), timeout=30
    )
    stack.served_tokens(response)
    return response


def assert_unauthenticated(response: httpx.Response) -> None:
    assert 401 == response.status_code, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_valid_workload_jwt_gets_a_token(
    module_stack: Stack, broker: BrokerServer, realm: Realm, issuer: WorkloadIssuer
) -> None:
    """A JWT from a trusted issuer, for our audience, whose subject is a caller: 200."""
    response = presented(module_stack, broker, realm, issuer.token(SUBJECT))
    assert (200, realm.name) == (response.status_code, response.json().get("realm"))


def test_alg_none_is_401(
    module_stack: Stack, broker: BrokerServer, realm: Realm, issuer: WorkloadIssuer
) -> None:
    """An unsigned token (`alg: none`) with otherwise valid claims is refused."""
    forged = issuer.unsigned(issuer.claims(SUBJECT))
    assert_unauthenticated(presented(module_stack, broker, realm, forged))


def test_hs256_signed_with_the_public_key_is_401(
    module_stack: Stack, broker: BrokerServer, realm: Realm, issuer: WorkloadIssuer
) -> None:
    """HS256 keyed with the issuer's public key PEM (algorithm confusion) is refused."""
    forged = issuer.hs256_with_public_key(issuer.claims(SUBJECT))
    assert_unauthenticated(presented(module_stack, broker, realm, forged))


def test_tampered_signature_is_401(
    module_stack: Stack, broker: BrokerServer, realm: Realm, issuer: WorkloadIssuer
) -> None:
    """A valid token with one character of its signature changed is refused."""
    assert_unauthenticated(presented(module_stack, broker, realm, tampered(issuer.token(SUBJECT))))


def test_expired_jwt_is_401(
    module_stack: Stack, broker: BrokerServer, realm: Realm, issuer: WorkloadIssuer
) -> None:
    """A token that expired two minutes ago (beyond the 30 s leeway) is refused."""
    now = int(time.time())
    expired = issuer.token(SUBJECT, exp=now - 120, nbf=now - 720, iat=now - 720)
    assert_unauthenticated(presented(module_stack, broker, realm, expired))


def test_not_yet_valid_jwt_is_401(
    module_stack: Stack, broker: BrokerServer, realm: Realm, issuer: WorkloadIssuer
) -> None:
    """A token whose nbf is two minutes ahead is refused."""
    now = int(time.time())
    early = issuer.token(SUBJECT, nbf=now + 120, exp=now + 720)
    assert_unauthenticated(presented(module_stack, broker, realm, early))


def test_wrong_audience_is_401(
    module_stack: Stack, broker: BrokerServer, realm: Realm, issuer: WorkloadIssuer
) -> None:
    """A token meant for another audience is refused."""
    other = issuer.token(SUBJECT, aud=["some-other-service"])
    assert_unauthenticated(presented(module_stack, broker, realm, other))


def test_wrong_issuer_is_401(
    module_stack: Stack, broker: BrokerServer, realm: Realm, issuer: WorkloadIssuer
) -> None:
    """A token signed by the trusted key but naming an untrusted issuer is refused."""
    foreign = issuer.token(SUBJECT, iss="https://evil.example")
    assert_unauthenticated(presented(module_stack, broker, realm, foreign))


def test_unknown_subject_is_401(
    module_stack: Stack, broker: BrokerServer, realm: Realm, issuer: WorkloadIssuer
) -> None:
    """A valid token whose subject is no caller in the policy is refused."""
    stranger = issuer.token("system:serviceaccount:payments:stranger")
    assert_unauthenticated(presented(module_stack, broker, realm, stranger))


def test_unknown_kid_is_401(
    module_stack: Stack, broker: BrokerServer, realm: Realm, issuer: WorkloadIssuer
) -> None:
    """A token signed by a key the issuer never published is refused."""
    unpublished = issuer.sign(issuer.claims(SUBJECT), key=SigningKey.rsa())
    assert_unauthenticated(presented(module_stack, broker, realm, unpublished))


def test_missing_required_claim_is_401(
    module_stack: Stack, broker: BrokerServer, realm: Realm, issuer: WorkloadIssuer
) -> None:
    """A token without `nbf` (iss, aud, exp, nbf are required) is refused."""
    incomplete = issuer.token(SUBJECT, nbf=None)
    assert_unauthenticated(presented(module_stack, broker, realm, incomplete))


def test_refused_jwt_is_counted_without_the_token(
    stack: Stack, module_stack: Stack, broker: BrokerServer, realm: Realm, issuer: WorkloadIssuer
) -> None:
    """A refused JWT is counted in its source's auth.failed audit event (written at
    shutdown here), and the JWT appears nowhere in the broker's output."""
    own = stack.start_broker(BROKER_POLICY_FILE=str(policy_path(module_stack)))
    forged = tampered(issuer.token(SUBJECT))
    stack.leak_watch.add(forged)
    response = httpx.get(f"{own.url}/v1/realms/{realm.name}/token", headers=bearer(forged))
    own.process.stop()
    failed = [e for e in stack.audit_events(own.process) if e["event"] == "auth.failed"]
    assert 401 == response.status_code
    assert [(1, {"workload-jwt-refused": 1})] == [(e["count"], e["reasons"]) for e in failed]
    assert forged not in own.process.log_path.read_text()
