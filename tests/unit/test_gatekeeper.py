"""The gatekeeper: a credential told apart by shape, refusals audited without it, the rate
limit taken before anything else, roles checked as data."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from broker.core.context import RequestContext
from broker.core.errors import Forbidden, RateLimited, Unauthenticated
from broker.core.identity import Gatekeeper, looks_like_jwt
from broker.core.policy import JwtIssuerSpec, Policy, RateLimit, WorkloadIdentity, hash_key
from broker.core.refusal_tally import RefusalTally
from fakes import FakeClock, RecordingAuditSink

KEY = "atb_billing-key-0123456789abcdef0123456789"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJsZWRnZXIifQ.c2lnbmF0dXJl"
CTX = RequestContext(request_id="req-1", client_ip="10.0.0.7")
ISSUER = {"issuer": "https://issuer.test", "jwks_url": "https://issuer.test/jwks", "audience": "a"}


class FakeVerifier:
    """Says every JWT is `subject`'s, and records what it was asked."""

    def __init__(self, subject: str = "sa:ledger") -> None:
        self.subject_of = subject
        self.asked: list[str] = []

    async def identify(self, token: str, issuers: Sequence[JwtIssuerSpec]) -> WorkloadIdentity:
        self.asked.append(token)
        return WorkloadIdentity(issuers[0].issuer, self.subject_of)


class FakeLimiter:
    """Allows `allowed` requests, then asks the caller to wait `wait` seconds."""

    def __init__(self, *, allowed: int = 1_000_000, wait: float = 0.4) -> None:
        self.allowed = allowed
        self.wait = wait
        self.counted: list[str] = []

    async def acquire(self, caller: str, limit: RateLimit) -> float:
        self.counted.append(caller)
        return 0.0 if len(self.counted) <= self.allowed else self.wait


POLICY = Policy.from_mapping(
    {
        "callers": [
            {"name": "billing-api", "api_key_sha256": hash_key(KEY), "realms": ["acme"]},
            {"name": "ledger", "jwt_subject": "sa:ledger", "realms": ["acme"]},
            {
                "name": "chatty",
                "api_key_sha256": hash_key(KEY + "-chatty"),
                "rate_limit": {"per_second": 1, "burst": 1},
            },
            {"name": "audit", "api_key_sha256": hash_key(KEY + "-audit"), "roles": ["auditor"]},
        ],
        "jwt_issuers": [ISSUER],
    }
)


def gatekeeper(
    *,
    policy: Policy = POLICY,
    verifier: FakeVerifier | None = None,
    limiter: FakeLimiter | None = None,
    audit: RecordingAuditSink | None = None,
    clock: FakeClock | None = None,
) -> Gatekeeper:
    return Gatekeeper(
        policy=lambda: policy,
        verifier=verifier or FakeVerifier(),
        limiter=limiter or FakeLimiter(),
        audit=audit or RecordingAuditSink(),
        clock=clock or FakeClock(),
    )


@pytest.mark.parametrize(
    ("credential", "shaped"),
    [
        (JWT, True),
        ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", True),
        (KEY, False),
        ("a.b", False),
        ("a.b.c.d", False),
        ("a.b c.d", False),
    ],
)
def test_jwt_is_told_apart_by_shape(credential: str, shaped: bool) -> None:
    """Three base64url segments are a JWT; anything else is an API key."""
    assert shaped == looks_like_jwt(credential)


async def test_api_key_finds_its_caller() -> None:
    """An API key is looked up in the policy by its hash."""
    assert "billing-api" == (await gatekeeper().admit(KEY, ctx=CTX)).name


async def test_jwt_is_verified_and_its_subject_finds_the_caller() -> None:
    """A JWT goes to the verifier; its subject names the caller."""
    verifier = FakeVerifier()
    caller = await gatekeeper(verifier=verifier).admit(JWT, ctx=CTX)
    assert ("ledger", [JWT]) == (caller.name, verifier.asked)


async def test_jwt_is_refused_when_no_issuer_is_trusted() -> None:
    """Without jwt_issuers in the policy a JWT is refused before any verification."""
    verifier = FakeVerifier()
    with pytest.raises(Unauthenticated):
        await gatekeeper(policy=Policy.empty(), verifier=verifier).admit(JWT, ctx=CTX)
    assert [] == verifier.asked


async def test_verified_subject_unknown_to_the_policy_is_refused() -> None:
    """A valid JWT whose subject no caller declares is refused."""
    with pytest.raises(Unauthenticated):
        await gatekeeper(verifier=FakeVerifier("sa:stranger")).admit(JWT, ctx=CTX)


async def test_unknown_key_is_not_audited_on_its_own() -> None:
    """A refused credential writes nothing at once: it is counted for its source."""
    audit = RecordingAuditSink()
    with pytest.raises(Unauthenticated):
        await gatekeeper(audit=audit).admit(KEY + "x", ctx=CTX, realm="acme", token_request=True)
    assert [] == audit.events


async def test_failed_authentications_become_one_counted_event_per_source() -> None:
    """Refusals from one address in one minute are flushed as one auth.failed event with
    their count, first and last time and reasons."""
    audit, clock = RecordingAuditSink(), FakeClock(1_800_000_000.0)
    gate = gatekeeper(audit=audit, clock=clock, verifier=FakeVerifier("sa:stranger"))
    for credential in (KEY + "x", KEY + "y", JWT):
        with pytest.raises(Unauthenticated):
            await gate.admit(credential, ctx=CTX)
        clock.advance(1.5)
    await gate.failures.flush_all()
    [event] = audit.events
    assert ("auth.failed", "10.0.0.7", 3, {"api-key-refused": 2, "workload-jwt-refused": 1}) == (
        event.event,
        event.client_ip,
        event.count,
        event.reasons,
    )
    assert (1_800_000_000.0, 1_800_000_003.0) == (event.first_time, event.last_time)


async def test_a_new_minute_flushes_the_last_one() -> None:
    """Once a minute has ended its counts are written; the new minute counts afresh."""
    audit, clock = RecordingAuditSink(), FakeClock(1_800_000_000.0)
    gate = gatekeeper(audit=audit, clock=clock)
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await gate.admit(KEY + "x", ctx=CTX)
        clock.advance(60)
    await gate.failures.flush_due()
    assert [1, 1] == [event.count for event in audit.events]


async def test_refusal_record_never_holds_the_credential() -> None:
    """Nothing of the presented key appears in the audit record."""
    audit = RecordingAuditSink()
    gate = gatekeeper(audit=audit)
    with pytest.raises(Unauthenticated):
        await gate.admit(KEY + "x", ctx=CTX, token_request=True)
    await gate.failures.flush_all()
    assert KEY not in str(audit.events[0].as_json())


async def test_sources_past_the_bound_are_counted_together() -> None:
    """Beyond `max_sources` addresses in a minute, failures count under `_other`."""
    audit, clock = RecordingAuditSink(), FakeClock(1_800_000_000.0)
    tally = RefusalTally(audit=audit, clock=clock, max_keys=2)
    for octet in range(5):
        tally.record(f"10.0.0.{octet}", "api-key-refused")
    await tally.flush_all()
    assert {"10.0.0.0": 1, "10.0.0.1": 1, "_other": 3} == {
        str(event.client_ip): event.count for event in audit.events
    }


async def test_rate_limit_is_taken_for_a_limited_caller() -> None:
    """A caller with a rate limit is counted; beyond it the answer is 429 with Retry-After."""
    with pytest.raises(RateLimited) as refused:
        await gatekeeper(limiter=FakeLimiter(allowed=0, wait=0.4)).admit(KEY + "-chatty", ctx=CTX)
    assert 1 == refused.value.retry_after


async def test_rate_limited_request_is_audited_with_the_caller() -> None:
    """A 429 is recorded as token.denied with reason rate-limited and the caller's name."""
    audit = RecordingAuditSink()
    with pytest.raises(RateLimited):
        await gatekeeper(limiter=FakeLimiter(allowed=0), audit=audit).admit(
            KEY + "-chatty", ctx=CTX, realm="acme", token_request=True
        )
    [event] = audit.events
    assert ("token.denied", "rate-limited", "chatty") == (event.event, event.reason, event.caller)


async def test_further_429s_of_the_minute_are_one_counted_event() -> None:
    """Past the first 429 of a minute, a caller's refusals are flushed as one
    rate_limit.exceeded event with their count."""
    audit, clock = RecordingAuditSink(), FakeClock(1_800_000_000.0)
    gate = gatekeeper(limiter=FakeLimiter(allowed=0), audit=audit, clock=clock)
    for _ in range(5):
        with pytest.raises(RateLimited):
            await gate.admit(KEY + "-chatty", ctx=CTX, realm="acme", token_request=True)
    await gate.flush_refusals()
    assert [("token.denied", "chatty", None), ("rate_limit.exceeded", "chatty", 4)] == [
        (event.event, event.caller, event.count) for event in audit.events
    ]


async def test_caller_without_a_limit_is_not_counted() -> None:
    """Callers with no rate_limit (and no default) never reach the limiter."""
    limiter = FakeLimiter()
    await gatekeeper(limiter=limiter).admit(KEY, ctx=CTX)
    assert [] == limiter.counted


def test_default_rate_limit_applies_to_callers_without_their_own() -> None:
    """default_rate_limit is the limit of every caller that names none."""
    policy = Policy.from_mapping(
        {
            "callers": [{"name": "a", "api_key_sha256": hash_key(KEY)}],
            "default_rate_limit": {"per_second": 5, "burst": 10},
        }
    )
    caller = policy.caller_for_key(KEY)
    assert RateLimit(5, 10) == (caller.rate_limit if caller else None)


def test_burst_defaults_to_one_second_of_requests() -> None:
    """A rate_limit without a burst allows per_second requests at once (at least one)."""
    policy = Policy.from_mapping(
        {
            "callers": [
                {"name": "a", "api_key_sha256": hash_key(KEY), "rate_limit": {"per_second": 2.5}}
            ]
        }
    )
    caller = policy.caller_for_key(KEY)
    assert RateLimit(2.5, 3) == (caller.rate_limit if caller else None)


async def test_plain_caller_lacks_the_auditor_role() -> None:
    """A caller without roles is refused (403) where the auditor role is required, audited."""
    audit = RecordingAuditSink()
    keeper = gatekeeper(audit=audit)
    caller = await keeper.admit(KEY, ctx=CTX)
    with pytest.raises(Forbidden):
        await keeper.require_role(caller, "auditor", ctx=CTX)
    assert [("access.denied", "role-required", "billing-api")] == [
        (e.event, e.reason, e.caller) for e in audit.events
    ]


async def test_auditor_has_the_auditor_role() -> None:
    """An auditor passes the auditor check."""
    keeper = gatekeeper()
    caller = await keeper.admit(KEY + "-audit", ctx=CTX)
    await keeper.require_role(caller, "auditor", ctx=CTX)
