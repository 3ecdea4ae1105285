"""`TokenBroker`, the facade, on fakes: where tokens come from, min_ttl, who may have
which realm, what is audited, eviction, rotation and realm status."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from broker.core.errors import (
    Forbidden,
    IdPUnavailable,
    MinTtlUnsatisfiable,
    RealmNotFound,
    StoreUnavailable,
)
from broker.core.models import TokenSource
from broker.core.policy import Caller
from fakes import eventually
from harness import ADMIN, CTX, Harness


async def test_first_request_fetches_from_the_idp(h: Harness) -> None:
    """A cold broker fetches the token from the IdP."""
    issued = await h.broker.token("acme")

    assert (TokenSource.IDP, "token-acme-1", 1) == (
        issued.source,
        issued.token.value,
        h.issuer.fetches,
    )


async def test_second_request_is_served_from_memory(h: Harness) -> None:
    """The next request for the realm is served from the in-process cache, not the IdP."""
    await h.broker.token("acme")

    issued = await h.broker.token("acme")

    assert (TokenSource.MEMORY, "token-acme-1", 1) == (
        issued.source,
        issued.token.value,
        h.issuer.fetches,
    )


async def test_fetched_token_is_shared_through_the_store(h: Harness) -> None:
    """A token fetched from the IdP is put in the shared store for the other replicas."""
    await h.broker.token("acme")

    shared = (await h.shared.get("acme")).token

    assert "token-acme-1" == (shared.value if shared else None)


async def test_token_in_the_shared_store_is_used_without_a_fetch(h: Harness) -> None:
    """A token another replica stored is served (source redis) and the IdP is not asked."""
    await h.shared.put("acme", h.peer_token(), 3000, generation=0)

    issued = await h.broker.token("acme")

    assert (TokenSource.REDIS, "token-from-peer", 0) == (
        issued.source,
        issued.token.value,
        h.issuer.fetches,
    )


async def test_realms_are_cached_separately(h: Harness) -> None:
    """A token of one realm is never served for another."""
    await h.broker.token("acme")

    issued = await h.broker.token("globex")

    assert ("token-globex-2", 2) == (issued.token.value, h.issuer.fetches)


async def test_unknown_realm_raises_realm_not_found(h: Harness) -> None:
    """A realm with no credentials in the secret source is RealmNotFound, and no fetch."""
    with pytest.raises(RealmNotFound):
        await h.broker.token("initech")

    assert 0 == h.issuer.fetches


async def test_min_ttl_beyond_the_cached_token_fetches_a_fresh_one(h: Harness) -> None:
    """A cached token with less than min_ttl left is replaced by a fresh fetch."""
    await h.broker.token("acme")
    h.advance(3000)  # 570 s of validity left

    issued = await h.broker.token("acme", min_ttl=600)

    assert (TokenSource.IDP, "token-acme-2", 2) == (
        issued.source,
        issued.token.value,
        h.issuer.fetches,
    )


async def test_min_ttl_within_the_cached_token_is_served_from_memory(h: Harness) -> None:
    """A cached token with at least min_ttl left is served as is."""
    await h.broker.token("acme")
    h.advance(3000)  # 570 s of validity left

    issued = await h.broker.token("acme", min_ttl=500)

    assert (TokenSource.MEMORY, 1) == (issued.source, h.issuer.fetches)


async def test_min_ttl_beyond_a_fresh_token_raises(h: Harness) -> None:
    """A min_ttl longer than a fresh token lives cannot be met: MinTtlUnsatisfiable."""
    with pytest.raises(MinTtlUnsatisfiable):
        await h.broker.token("acme", min_ttl=4000)

    assert 1 == h.issuer.fetches


async def test_stored_token_short_of_min_ttl_is_not_served(h: Harness) -> None:
    """A shared token with less than min_ttl left is passed over for a fresh fetch."""
    await h.shared.put("acme", h.peer_token(lifetime=80), 50, generation=0)

    issued = await h.broker.token("acme", min_ttl=60)

    assert (TokenSource.IDP, 1) == (issued.source, h.issuer.fetches)


async def test_issue_refuses_a_realm_the_caller_may_not_use(h: Harness) -> None:
    """A caller not allowed the realm gets Forbidden before any secret is read."""
    caller = Caller("billing-api", frozenset({"globex"}), frozenset())

    with pytest.raises(Forbidden):
        await h.broker.issue(caller, "acme", min_ttl=60, ctx=CTX)

    assert (0, 0) == (h.secrets.reads, h.issuer.fetches)


async def test_issue_refuses_an_unknown_realm_as_forbidden_not_not_found(h: Harness) -> None:
    """A refused caller learns nothing about whether the realm exists."""
    caller = Caller("billing-api", frozenset({"acme"}), frozenset())

    with pytest.raises(Forbidden):
        await h.broker.issue(caller, "initech", min_ttl=60, ctx=CTX)


async def test_refusal_is_audited_as_token_denied(h: Harness) -> None:
    """A refusal records token.denied with the caller, realm, request and a reason."""
    caller = Caller("billing-api", frozenset({"globex"}), frozenset())
    with pytest.raises(Forbidden):
        await h.broker.issue(caller, "acme", min_ttl=60, ctx=CTX)

    [event] = h.audit.events

    assert ("token.denied", "denied", "billing-api", "acme", "req-0001", "10.0.0.7") == (
        event.event,
        event.outcome,
        event.caller,
        event.realm,
        event.request_id,
        event.client_ip,
    )
    assert event.reason


async def test_issue_serves_an_allowed_caller(h: Harness) -> None:
    """A caller allowed the realm gets its token."""
    caller = Caller("billing-api", frozenset({"acme"}), frozenset())

    issued = await h.broker.issue(caller, "acme", min_ttl=60, ctx=CTX)

    assert "token-acme-1" == issued.token.value


async def test_issue_serves_a_wildcard_caller(h: Harness) -> None:
    """A caller allowed every realm gets any realm's token."""
    caller = Caller("secops", frozenset({"*"}), frozenset({"admin"}))

    issued = await h.broker.issue(caller, "globex", min_ttl=60, ctx=CTX)

    assert "token-globex-1" == issued.token.value


async def test_issue_is_audited_as_token_issued(h: Harness) -> None:
    """A served token records token.issued with caller, realm, request and token prefix."""
    caller = Caller("billing-api", frozenset({"acme"}), frozenset())

    issued = await h.broker.issue(caller, "acme", min_ttl=60, ctx=CTX)

    [event] = h.audit.named("token.issued")
    expected_prefix = hashlib.sha256(issued.token.value.encode()).hexdigest()[:16]
    assert (
        "success",
        "billing-api",
        "acme",
        "req-0001",
        "10.0.0.7",
        "idp",
        expected_prefix,
        issued.token.expires_at,
    ) == (
        event.outcome,
        event.caller,
        event.realm,
        event.request_id,
        event.client_ip,
        event.source,
        event.token_sha256,
        event.token_expires_at,
    )


async def test_audit_trail_never_holds_the_token(h: Harness) -> None:
    """No audit event carries the token value itself."""
    caller = Caller("billing-api", frozenset({"acme"}), frozenset())

    issued = await h.broker.issue(caller, "acme", min_ttl=60, ctx=CTX)

    assert [] == [e for e in h.audit.events if issued.token.value in str(e.as_json())]


async def test_failed_issue_is_audited_as_denied_for_the_caller(h: Harness) -> None:
    """A caller whose token could not be obtained has a token.denied naming the cause."""
    h.issuer.fail_with = IdPUnavailable("down")
    caller = Caller("billing-api", frozenset({"acme"}), frozenset())
    with pytest.raises(IdPUnavailable):
        await h.broker.issue(caller, "acme", min_ttl=60, ctx=CTX)

    [event] = h.audit.named("token.denied")

    assert ("billing-api", "idp-unavailable") == (event.caller, event.reason)


async def test_evict_drops_the_cached_token(h: Harness) -> None:
    """After an eviction the next request fetches a new token instead of the old one."""
    await h.broker.token("acme")

    await h.broker.evict("acme", actor=ADMIN, ctx=CTX)
    issued = await h.broker.token("acme")

    assert (TokenSource.IDP, "token-acme-2") == (issued.source, issued.token.value)


async def test_evict_drops_the_token_from_the_shared_store(h: Harness) -> None:
    """An eviction removes the token other replicas would read from the store."""
    await h.broker.token("acme")

    await h.broker.evict("acme", actor=ADMIN, ctx=CTX)

    assert (await h.shared.get("acme")).token is None


async def test_evict_is_audited_with_the_evicted_token_prefix(h: Harness) -> None:
    """An eviction records token.evicted with the actor and the dropped token's prefix."""
    issued = await h.broker.token("acme")

    await h.broker.evict("acme", actor=ADMIN, ctx=CTX)

    [event] = h.audit.named("token.evicted")
    assert (ADMIN, "acme", issued.token.fingerprint()) == (
        event.caller,
        event.realm,
        event.token_sha256,
    )


async def test_rotate_fetches_with_the_new_secret(h: Harness) -> None:
    """rotate() re-reads the realm's secret and fetches a token with the new version."""
    await h.broker.token("acme")
    h.secrets.rotate("acme")

    status = await h.broker.rotate("acme", actor=ADMIN, ctx=CTX)

    assert ([1, 2], 2, True) == (h.issuer.versions_seen, status.credential_version, status.cached)


async def test_realm_status_reports_the_cached_token(h: Harness) -> None:
    """A realm's status shows its cached token's expiry and credential version."""
    issued = await h.broker.token("acme")

    status = h.broker.realm_status("acme")

    assert (True, issued.token.expires_at, 1, None) == (
        status.cached,
        status.expires_at,
        status.credential_version,
        status.last_error,
    )


async def test_realm_status_reports_the_last_error(h: Harness) -> None:
    """A realm whose last fetch failed shows why."""
    h.issuer.fail_with = IdPUnavailable("down")
    with pytest.raises(IdPUnavailable):
        await h.broker.token("acme")

    assert (False, "idp-unavailable") == (
        h.broker.realm_status("acme").cached,
        h.broker.realm_status("acme").last_error,
    )


async def test_unknown_realm_leaves_no_status_behind(h: Harness) -> None:
    """A realm that turned out not to exist is not listed among the realms."""
    with pytest.raises(RealmNotFound):
        await h.broker.token("initech")

    assert [] == list(h.broker.realm_statuses())


async def test_aclose_cancels_an_in_flight_fetch(h: Harness) -> None:
    """aclose() cancels a fetch in progress; its caller sees the cancellation."""
    h.issuer.block()
    request = asyncio.create_task(h.broker.token("acme"))
    await eventually(lambda: h.issuer.fetches == 1)

    await h.broker.aclose()

    with pytest.raises(asyncio.CancelledError):
        await request
    assert [] == h.issuer.issued


async def test_eviction_the_store_refused_is_audited_as_a_failure(h: Harness) -> None:
    """An eviction that could not reach the store raises and is audited as a failure."""
    await h.broker.token("acme")
    h.store.down = True

    with pytest.raises(StoreUnavailable):
        await h.broker.evict("acme", actor=ADMIN, ctx=CTX)

    [event] = h.audit.named("token.evicted")
    assert ("failure", "token-store-unavailable") == (event.outcome, event.reason)


async def test_rotate_superseded_by_later_evictions_still_answers_the_status(h: Harness) -> None:
    """A rotation whose fetch is superseded by evictions that follow it has done its part
    (re-read, evict everywhere) and answers the realm's status instead of an error."""

    async def evict_meanwhile() -> None:
        await h.shared.evict("acme", reason="evicted")

    h.issuer.after_fetch = evict_meanwhile

    status = await h.broker.rotate("acme", actor=ADMIN, ctx=CTX)

    assert ("acme", False) == (status.realm, status.cached)
