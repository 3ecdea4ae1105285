"""Scopes per caller: one token per (realm, scope set), the policy's scopes checked first."""

from __future__ import annotations

import asyncio

import pytest

from broker.core import rules
from broker.core.errors import InvalidScope, ScopeNotAllowed
from broker.core.models import TokenSource
from broker.core.policy import Caller, Policy, PolicyError, hash_key
from harness import ADMIN, CTX, Harness, MakeHarness

READER = Caller("reporting", frozenset({"acme"}), frozenset(), scopes=frozenset({"reports.read"}))
PLAIN = Caller("billing", frozenset({"acme"}), frozenset())
READ = ("reports.read",)


def test_scope_parameter_is_normalised_to_a_sorted_set() -> None:
    """Order and repetition of the asked scopes do not make another token."""
    assert ("a", "b") == rules.parse_scopes("b  a b")


@pytest.mark.parametrize("raw", ['say"hi"', "back\\slash", " ".join(f"s{i}" for i in range(17))])
def test_malformed_scope_parameter_is_refused(raw: str) -> None:
    """A scope with a quote or backslash, or too many scopes, is not a scope set."""
    with pytest.raises(ValueError, match="scope"):
        rules.parse_scopes(raw)


def test_scoped_redis_keys_keep_the_realm_as_the_hash_tag() -> None:
    """A scoped slot's keys have the realm, and only the realm, in braces."""
    key = rules.token_key("atlas", rules.slot("acme", ("reports.read",)))

    assert key.startswith("atlas:token:{acme}:")
    assert key.count("{") == 1
    assert key != rules.token_key("atlas", "acme")


def test_policy_scopes_are_read_from_the_caller_entry() -> None:
    """`scopes:` on a caller entry is what the caller may ask for; absent, nothing."""
    policy = Policy.from_mapping(
        {
            "callers": [
                {"name": "r", "api_key_sha256": hash_key("key-r"), "scopes": ["reports.read"]},
                {"name": "p", "api_key_sha256": hash_key("key-p")},
            ]
        }
    )
    reader, plain = policy.caller_for_key("key-r"), policy.caller_for_key("key-p")
    assert reader is not None
    assert plain is not None

    assert (True, False, True) == (
        reader.may_ask(READ),
        plain.may_ask(READ),
        plain.may_ask(()),
    )


def test_policy_with_a_malformed_scope_is_refused() -> None:
    """A scope with a space cannot be a policy entry's scope."""
    with pytest.raises(PolicyError):
        Policy.from_mapping(
            {"callers": [{"name": "r", "api_key_sha256": "a" * 64, "scopes": ["a b"]}]}
        )


async def test_scoped_and_default_tokens_are_fetched_once_each(h: Harness) -> None:
    """A scoped caller and a default caller of one realm each get their own token, and
    the IdP is asked once per scope set however many ask at once."""
    scoped = [h.broker.issue(READER, "acme", min_ttl=60, ctx=CTX, scopes=READ) for _ in range(5)]
    plain = [h.broker.issue(PLAIN, "acme", min_ttl=60, ctx=CTX) for _ in range(5)]
    results = await asyncio.gather(*scoped, *plain)

    assert (2, [None, "reports.read"]) == (h.issuer.fetches, sorted(h.issuer.scopes_seen, key=str))
    assert {"reports.read"} == {r.token.scope for r in results[:5]}
    assert {None} == {r.token.scope for r in results[5:]}


async def test_scoped_token_is_shared_through_the_store_under_its_own_key(
    make_harness: MakeHarness,
) -> None:
    """A peer replica serves the scoped token from the store, not from the IdP."""
    first = make_harness()
    peer = make_harness(peer_of=first)
    await first.broker.token("acme", scopes=READ)

    issued = await peer.broker.token("acme", scopes=READ)

    assert (TokenSource.REDIS, 0) == (issued.source, peer.issuer.fetches)


async def test_forbidden_scope_is_refused_and_audited_before_any_fetch(h: Harness) -> None:
    """A scope outside the caller's policy entry is 403, audited, and never reaches the IdP
    or the secret source."""
    with pytest.raises(ScopeNotAllowed):
        await h.broker.issue(PLAIN, "acme", min_ttl=60, ctx=CTX, scopes=READ)

    denied = h.audit.named("token.denied")
    assert (0, 0) == (h.issuer.fetches, h.secrets.reads)
    assert [("acme", "reports.read", "scope-not-allowed")] == [
        (e.realm, e.scope, e.reason) for e in denied
    ]


async def test_idp_invalid_scope_is_an_invalid_scope_error(h: Harness) -> None:
    """The IdP's invalid_scope answer reaches the caller as a 400 naming the scope."""
    h.issuer.unknown_scopes.add("reports.read")

    with pytest.raises(InvalidScope, match=r"reports\.read") as raised:
        await h.broker.issue(READER, "acme", min_ttl=60, ctx=CTX, scopes=READ)

    assert 400 == raised.value.status


async def test_issued_scoped_token_is_audited_with_its_scope(h: Harness) -> None:
    """token.issued and token.fetched of a scoped token carry the realm and scope set."""
    await h.broker.issue(READER, "acme", min_ttl=60, ctx=CTX, scopes=READ)

    assert [("acme", "reports.read")] * 2 == [
        (e.realm, e.scope) for e in h.audit.named("token.fetched") + h.audit.named("token.issued")
    ]


async def test_eviction_drops_the_realms_scoped_tokens_too(h: Harness) -> None:
    """Evicting a realm drops its scoped token as well: the next request fetches anew."""
    await h.broker.token("acme", scopes=READ)
    await h.broker.token("acme")

    await h.broker.evict("acme", actor=ADMIN, ctx=CTX)
    issued = await h.broker.token("acme", scopes=READ)

    assert (TokenSource.IDP, 3) == (issued.source, h.issuer.fetches)


async def test_eviction_reaches_a_scoped_token_only_a_peer_served(
    make_harness: MakeHarness,
) -> None:
    """Evicting a realm on one replica drops the scoped token another replica fetched,
    though this one never served that scope set."""
    here = make_harness()
    peer = make_harness(peer_of=here)
    await peer.broker.token("acme", scopes=READ)

    await here.broker.evict("acme", actor=ADMIN, ctx=CTX)
    after = await here.broker.token("acme", scopes=READ)

    assert (TokenSource.IDP, 1) == (after.source, here.issuer.fetches)
