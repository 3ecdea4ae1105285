"""`TokenBroker`, the core service, on fakes: where tokens come from, how often the IdP is
asked, what is audited, and what keeps working when a dependency fails."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

import pytest

from broker.adapters.clock import SystemClock
from broker.core.broker import BrokerTimings
from broker.core.errors import (
    Forbidden,
    IdPBadResponse,
    IdPRejected,
    IdPUnavailable,
    MinTtlUnsatisfiable,
    RealmNotFound,
    UpstreamError,
)
from broker.core.models import Cached, TokenSource
from broker.core.policy import Caller
from fakes import eventually
from harness import ADMIN, BACKOFF_CEILING, CTX, FAST, Harness, MakeHarness, live_tasks

# --- where a token comes from ------------------------------------------------------------


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


async def test_credentials_are_read_once_per_realm(h: Harness) -> None:
    """The secret source is read on the realm's first fetch only, not on every fetch."""
    await h.broker.token("acme")
    h.advance(3600)

    await h.broker.token("acme")

    assert (1, 2) == (h.secrets.reads, h.issuer.fetches)


# --- min_ttl -----------------------------------------------------------------------------


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


async def test_token_expiring_within_the_skew_is_never_stored(
    make_harness: MakeHarness,
) -> None:
    """A token whose TTL would be <= 0 after the skew is refused and not cached."""
    h = make_harness(lifetime=20)  # skew 30

    with pytest.raises(IdPBadResponse):
        await h.broker.token("acme", min_ttl=0)

    assert (None, 0) == ((await h.shared.get("acme")).token, h.store.calls["put"])


async def test_token_expiring_within_the_skew_is_not_served_later(
    make_harness: MakeHarness,
) -> None:
    """A refused too-short token is not kept: the next request gets a new one from the IdP."""
    h = make_harness(lifetime=20)  # skew 30
    with pytest.raises(IdPBadResponse):
        await h.broker.token("acme", min_ttl=0)
    h.issuer.lifetime = 3600
    h.advance(BACKOFF_CEILING)

    issued = await h.broker.token("acme", min_ttl=0)

    assert (TokenSource.IDP, "token-acme-2") == (issued.source, issued.token.value)


# --- single flight -----------------------------------------------------------------------


async def test_concurrent_misses_share_one_fetch(h: Harness) -> None:
    """200 concurrent requests on a cold cache make exactly one IdP request."""
    gate = h.issuer.block()
    entered = 0

    async def ask() -> str:
        nonlocal entered
        entered += 1
        return (await h.broker.token("acme")).token.value

    callers = [asyncio.create_task(ask()) for _ in range(200)]
    await eventually(lambda: entered == 200 and h.issuer.fetches == 1)
    assert not any(task.done() for task in callers)  # all 200 are waiting on the fetch
    gate.set()
    values = await asyncio.gather(*callers)

    assert ({"token-acme-1"}, 1) == (set(values), h.issuer.fetches)


async def test_concurrent_misses_share_one_failure(h: Harness) -> None:
    """When the one shared fetch fails, every waiter gets its error and the IdP saw one call."""
    gate = h.issuer.block()
    h.issuer.fail_with = IdPUnavailable("the identity provider answered HTTP 503")
    callers = [asyncio.create_task(h.broker.token("acme")) for _ in range(20)]
    await eventually(lambda: h.issuer.fetches == 1)
    gate.set()

    outcomes = await asyncio.gather(*callers, return_exceptions=True)

    assert ({IdPUnavailable}, 1) == ({type(o) for o in outcomes}, h.issuer.fetches)


async def test_failed_fetch_is_retried_after_the_backoff(h: Harness) -> None:
    """Once the backoff after a failed fetch has passed, the next request asks the IdP."""
    h.issuer.fail_with = IdPUnavailable("down")
    with pytest.raises(IdPUnavailable):
        await h.broker.token("acme")
    h.issuer.fail_with = None
    h.advance(BACKOFF_CEILING)

    issued = await h.broker.token("acme")

    assert (TokenSource.IDP, 2) == (issued.source, h.issuer.fetches)


async def test_cancelled_caller_does_not_cancel_the_shared_fetch(h: Harness) -> None:
    """A caller that goes away mid-fetch leaves the fetch running for the others."""
    gate = h.issuer.block()
    starter = asyncio.create_task(h.broker.token("acme"))
    other = asyncio.create_task(h.broker.token("acme"))
    await eventually(lambda: h.issuer.fetches == 1)

    starter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starter
    gate.set()
    issued = await other

    assert ("token-acme-1", 1) == (issued.token.value, h.issuer.fetches)


async def test_fetch_abandoned_by_its_only_caller_still_fills_the_cache(h: Harness) -> None:
    """A fetch whose only caller went away completes, and the next caller gets its token."""
    gate = h.issuer.block()
    starter = asyncio.create_task(h.broker.token("acme"))
    await eventually(lambda: h.issuer.fetches == 1)
    starter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starter

    gate.set()
    issued = await h.broker.token("acme")

    assert ("token-acme-1", 1) == (issued.token.value, h.issuer.fetches)


# --- the shared store failing ------------------------------------------------------------


async def test_store_down_still_serves_from_the_idp(h: Harness) -> None:
    """With the store down, the broker fetches from the IdP on its own."""
    h.store.down = True

    issued = await h.broker.token("acme")

    assert (TokenSource.IDP, "token-acme-1") == (issued.source, issued.token.value)


async def test_store_down_keeps_single_flight_in_process(h: Harness) -> None:
    """With the store down, concurrent misses in one process still make one IdP request."""
    h.store.down = True
    gate = h.issuer.block()
    callers = [asyncio.create_task(h.broker.token("acme")) for _ in range(50)]
    await eventually(lambda: h.issuer.fetches == 1)
    gate.set()

    issued = await asyncio.gather(*callers)

    assert ({"token-acme-1"}, 1) == ({i.token.value for i in issued}, h.issuer.fetches)


async def test_store_down_serves_the_token_in_memory(h: Harness) -> None:
    """A token already in memory is served while the store is down."""
    await h.broker.token("acme")
    h.store.down = True

    issued = await h.broker.token("acme")

    assert (TokenSource.MEMORY, 1) == (issued.source, h.issuer.fetches)


async def test_store_failing_after_the_read_still_serves(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that dies between the read and the lock does not fail the request."""
    original_get: Callable[[str], Awaitable[Cached]] = h.store.get

    async def get_then_die(realm: str) -> Cached:
        cached = await original_get(realm)
        h.store.down = True
        return cached

    monkeypatch.setattr(h.store, "get", get_then_die)

    issued = await h.broker.token("acme")

    assert (TokenSource.IDP, 1) == (issued.source, h.issuer.fetches)


async def test_secret_source_down_keeps_loaded_credentials_working(h: Harness) -> None:
    """With Vault down, a realm whose credentials were loaded still gets fresh tokens."""
    await h.broker.token("acme")
    h.secrets.unavailable = True
    h.advance(3600)

    issued = await h.broker.token("acme")

    assert (TokenSource.IDP, 2) == (issued.source, h.issuer.fetches)


# --- another replica holding the lock ----------------------------------------------------


async def test_locked_realm_waits_for_the_peers_token(h: Harness) -> None:
    """While another replica holds the realm's lock, the broker waits for its token."""
    await h.shared.acquire_lock("acme", "peer-replica", 15)
    request = asyncio.create_task(h.broker.token("acme"))
    await eventually(lambda: h.store.calls["lock_held"] >= 1)  # polling the peer

    await h.shared.put("acme", h.peer_token(), 3000, generation=0)
    await h.shared.release_lock("acme", "peer-replica")
    issued = await request

    assert (TokenSource.REDIS, "token-from-peer", 0) == (
        issued.source,
        issued.token.value,
        h.issuer.fetches,
    )


async def test_locked_realm_does_not_fetch_while_the_peer_works(h: Harness) -> None:
    """Waiting on a peer's lock, the broker makes no IdP request, however long it polls."""
    await h.shared.acquire_lock("acme", "peer-replica", 15)
    request = asyncio.create_task(h.broker.token("acme"))

    await eventually(lambda: h.store.calls["lock_held"] >= 5)

    assert (False, 0) == (request.done(), h.issuer.fetches)
    await h.shared.release_lock("acme", "peer-replica")
    await request


async def test_peer_leaving_without_a_token_makes_the_broker_fetch(h: Harness) -> None:
    """When the lock holder releases without storing a token, the broker fetches itself."""
    await h.shared.acquire_lock("acme", "peer-replica", 15)
    request = asyncio.create_task(h.broker.token("acme"))
    await eventually(lambda: h.store.calls["lock_held"] >= 1)

    await h.shared.release_lock("acme", "peer-replica")
    issued = await request

    assert (TokenSource.IDP, 1) == (issued.source, h.issuer.fetches)


async def test_peer_dying_with_the_lock_is_taken_over_after_its_lease(h: Harness) -> None:
    """A lock holder that dies (its lease runs out) does not block the realm for good."""
    await h.shared.acquire_lock("acme", "dead-replica", 15)
    request = asyncio.create_task(h.broker.token("acme"))
    await eventually(lambda: h.store.calls["lock_held"] >= 1)

    h.advance(16)
    issued = await request

    assert (TokenSource.IDP, 1) == (issued.source, h.issuer.fetches)


async def test_peer_too_slow_is_given_up_on_after_peer_wait(h: Harness) -> None:
    """A peer that keeps the lock past peer_wait without a token makes the broker fetch."""
    await h.shared.acquire_lock("acme", "stuck-replica", 3600)
    request = asyncio.create_task(h.broker.token("acme"))
    await eventually(lambda: h.store.calls["lock_held"] >= 1)

    h.advance(FAST.peer_wait + 1)
    issued = await request

    assert (TokenSource.IDP, 1) == (issued.source, h.issuer.fetches)


async def test_fetch_releases_the_lock(h: Harness) -> None:
    """After its fetch the broker releases the realm's lock for the next fetch."""
    await h.broker.token("acme")

    assert not await h.shared.lock_held("acme")


async def test_failed_fetch_releases_the_lock(h: Harness) -> None:
    """A failed fetch releases the lock too, so peers need not wait out the lease."""
    h.issuer.fail_with = IdPUnavailable("down")
    with pytest.raises(IdPUnavailable):
        await h.broker.token("acme")

    assert not await h.shared.lock_held("acme")


# --- issue(): authorization and audit ----------------------------------------------------


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


async def test_fetch_is_audited_as_token_fetched_with_the_credential_version(
    h: Harness,
) -> None:
    """An IdP fetch records token.fetched with the realm and the credential version."""
    await h.broker.token("acme")

    [event] = h.audit.named("token.fetched")

    assert ("acme", "success", 1, "idp") == (
        event.realm,
        event.outcome,
        event.credential_version,
        event.source,
    )


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (IdPUnavailable("the identity provider answered HTTP 503"), "idp-unavailable"),
        (IdPBadResponse("not a token"), "idp-bad-response"),
        (
            IdPRejected("the identity provider answered 'invalid_scope'", reason="invalid_scope"),
            "idp-rejected:invalid_scope",
        ),
    ],
)
async def test_idp_error_is_audited_as_fetch_failed(
    h: Harness, error: UpstreamError, reason: str
) -> None:
    """An IdP failure records token.fetch_failed with the realm and the reason."""
    h.issuer.fail_with = error
    with pytest.raises(type(error)):
        await h.broker.token("acme")

    [event] = h.audit.named("token.fetch_failed")

    assert ("acme", "failure", reason) == (event.realm, event.outcome, event.reason)


async def test_failed_issue_is_audited_as_denied_for_the_caller(h: Harness) -> None:
    """A caller whose token could not be obtained has a token.denied naming the cause."""
    h.issuer.fail_with = IdPUnavailable("down")
    caller = Caller("billing-api", frozenset({"acme"}), frozenset())
    with pytest.raises(IdPUnavailable):
        await h.broker.issue(caller, "acme", min_ttl=60, ctx=CTX)

    [event] = h.audit.named("token.denied")

    assert ("billing-api", "idp-unavailable") == (event.caller, event.reason)


# --- IdP failures: backoff and a rotated secret ----------------------------------------


async def test_failing_idp_is_not_asked_again_within_the_backoff(h: Harness) -> None:
    """Right after a failed fetch, a new request fails fast without calling the IdP."""
    h.issuer.fail_with = IdPUnavailable("down")
    with pytest.raises(IdPUnavailable):
        await h.broker.token("acme")

    with pytest.raises(IdPUnavailable) as caught:
        await h.broker.token("acme")

    assert (1, True) == (h.issuer.fetches, (caught.value.retry_after or 0) >= 1)


async def test_backoff_answers_with_the_kind_of_the_last_failure(h: Harness) -> None:
    """A realm in backoff after a bad IdP answer reports IdPBadResponse, not unavailability."""
    h.issuer.fail_with = IdPBadResponse("not a token")
    with pytest.raises(IdPBadResponse):
        await h.broker.token("acme")

    with pytest.raises(IdPBadResponse):
        await h.broker.token("acme")


async def test_backoff_is_shared_with_other_replicas(h: Harness) -> None:
    """A failure's backoff is put in the shared store for the other replicas to respect."""
    h.issuer.fail_with = IdPUnavailable("down")
    with pytest.raises(IdPUnavailable):
        await h.broker.token("acme")

    backoff = await h.shared.get_backoff("acme")

    assert (1, "idp-unavailable") == (
        getattr(backoff, "failures", None),
        getattr(backoff, "error", None),
    )


async def test_invalid_client_rereads_a_rotated_secret(h: Harness) -> None:
    """When the IdP calls the loaded secret invalid and Vault has a new one, it is used."""
    await h.broker.token("acme")
    h.secrets.rotate("acme")
    h.issuer.refused_versions = {1}
    h.advance(3600)

    issued = await h.broker.token("acme")

    assert ([1, 1, 2], 2) == (h.issuer.versions_seen, issued.token.credential_version)


async def test_invalid_client_with_an_unchanged_secret_is_raised(h: Harness) -> None:
    """When the secret in Vault is the one the IdP refused, the refusal reaches the caller."""
    await h.broker.token("acme")
    h.issuer.refused_versions = {1}
    h.advance(3600)

    with pytest.raises(IdPRejected) as caught:
        await h.broker.token("acme")

    assert ("invalid_client", 2) == (caught.value.reason, h.issuer.fetches)


async def test_secret_rotation_is_audited(h: Harness) -> None:
    """Moving to a re-read secret records credentials.rotated with the new version."""
    await h.broker.token("acme")
    h.secrets.rotate("acme")
    h.issuer.refused_versions = {1}
    h.advance(3600)
    await h.broker.token("acme")

    [event] = h.audit.named("credentials.rotated")

    assert ("acme", 2) == (event.realm, event.credential_version)


# --- eviction, rotation and other replicas ----------------------------------------------


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


async def test_fetch_in_flight_during_an_eviction_is_not_served(h: Harness) -> None:
    """A token whose fetch began before an eviction is discarded; callers get a newer one."""
    gate = h.issuer.block()
    request = asyncio.create_task(h.broker.token("acme"))
    await eventually(lambda: h.issuer.fetches == 1)

    await h.broker.evict("acme", actor=ADMIN, ctx=CTX)
    gate.set()
    issued = await request

    assert ("token-acme-2", 2) == (issued.token.value, h.issuer.fetches)


async def test_rotate_fetches_with_the_new_secret(h: Harness) -> None:
    """rotate() re-reads the realm's secret and fetches a token with the new version."""
    await h.broker.token("acme")
    h.secrets.rotate("acme")

    status = await h.broker.rotate("acme", actor=ADMIN, ctx=CTX)

    assert ([1, 2], 2, True) == (h.issuer.versions_seen, status.credential_version, status.cached)


async def test_eviction_on_one_replica_drops_the_token_on_another(
    make_harness: MakeHarness,
) -> None:
    """An eviction is broadcast: a peer replica sharing the store drops its token too."""
    first = make_harness()
    second = make_harness(peer_of=first)
    second.broker.start()
    await second.broker.token("acme")

    await first.broker.evict("acme", actor=ADMIN, ctx=CTX)

    await eventually(lambda: not second.broker.realm_status("acme").cached)


async def test_new_secret_version_in_vault_is_picked_up(make_harness: MakeHarness) -> None:
    """A secret rotated in Vault is noticed by the version watch and used for a new token."""
    h = make_harness(timings=BrokerTimings(vault_poll=0.01))
    h.broker.start()
    await h.broker.token("acme")

    h.secrets.rotate("acme")
    await eventually(lambda: [1, 2] == h.issuer.versions_seen)
    issued = await h.broker.token("acme")

    assert (TokenSource.MEMORY, 2) == (issued.source, issued.token.credential_version)


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


# --- background refresh (real time: lifetimes of a second or two) ------------------------


async def test_token_is_refreshed_in_the_background(make_harness: MakeHarness) -> None:
    """Past the refresh point the IdP is asked again without any caller asking."""
    h = make_harness(
        clock=SystemClock(),
        timings=BrokerTimings(expiry_skew=0, refresh_before=300, peer_poll_min=0.001),
        lifetime=2,  # refresh lead = half the lifetime: 1 s after issue
    )
    await h.broker.token("acme", min_ttl=0)

    await eventually(lambda: h.issuer.fetches == 2, within=2.5, poll=0.01)
    issued = await h.broker.token("acme", min_ttl=0)

    assert (TokenSource.MEMORY, "token-acme-2") == (issued.source, issued.token.value)


async def test_refresher_stops_for_an_idle_realm(make_harness: MakeHarness) -> None:
    """A realm nobody asked for during a whole token lifetime is no longer refreshed."""
    h = make_harness(
        clock=SystemClock(),
        timings=BrokerTimings(expiry_skew=0, refresh_before=0.3, peer_poll_min=0.001),
        lifetime=1.2,  # refresh at 0.9 s (used 0.9 s ago), then at 1.8 s (idle 1.8 s)
    )
    await h.broker.token("globex", min_ttl=0)

    await eventually(lambda: not live_tasks("refresh:globex"), within=3, poll=0.01)

    assert 2 == h.issuer.fetches


async def test_aclose_stops_the_refresher(h: Harness) -> None:
    """aclose() cancels the background refresh tasks."""
    await h.broker.token("acme")
    assert 1 == len(live_tasks("refresh:acme"))

    await h.broker.aclose()

    assert [] == live_tasks("refresh:acme")


async def test_aclose_cancels_an_in_flight_fetch(h: Harness) -> None:
    """aclose() cancels a fetch in progress; its caller sees the cancellation."""
    h.issuer.block()
    request = asyncio.create_task(h.broker.token("acme"))
    await eventually(lambda: h.issuer.fetches == 1)

    await h.broker.aclose()

    with pytest.raises(asyncio.CancelledError):
        await request
    assert [] == h.issuer.issued


async def test_fetch_superseded_by_an_eviction_starts_over_without_stalling(h: Harness) -> None:
    """Callers waiting on a fetch that an eviction superseded get the next fetch's token,
    and the event loop keeps running meanwhile (a finished flight is never re-awaited)."""
    gate = h.issuer.block()
    waiters = [asyncio.create_task(h.broker.token("acme")) for _ in range(5)]
    await eventually(lambda: h.issuer.fetches == 1)
    await h.broker.evict("acme", actor=ADMIN, ctx=CTX)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    gate.set()
    issued = await asyncio.wait_for(asyncio.gather(*waiters), timeout=5)
    ticker.cancel()

    assert 2 == h.issuer.fetches
    assert {h.issuer.issued[1].value} == {i.token.value for i in issued}
    assert ticks > 0
