"""The pure rules of token validity, refresh and naming: the Redis key layout
included."""

from __future__ import annotations

import pytest

from broker.core import rules
from broker.core.models import AccessToken

NOW = 1_800_000_000.0


def token(*, lifetime: float, issued_at: float = NOW) -> AccessToken:
    return AccessToken(value="opaque", expires_at=issued_at + lifetime, issued_at=issued_at)


def test_expires_at_is_exp_when_exp_comes_first() -> None:
    """A JWT exp earlier than issued + expires_in is when the token dies."""
    assert NOW + 100 == rules.expires_at(issued_at=NOW, exp=NOW + 100, expires_in=3600)


def test_expires_at_is_expires_in_when_it_comes_first() -> None:
    """An expires_in shorter than the JWT's exp is when the token dies."""
    assert NOW + 300 == rules.expires_at(issued_at=NOW, exp=NOW + 3600, expires_in=300)


def test_cache_ttl_subtracts_the_skew() -> None:
    """The store keeps a token for its remaining life minus the skew."""
    assert 3570 == rules.cache_ttl(token(lifetime=3600), now=NOW, skew=30)


def test_cache_ttl_floors_fractions() -> None:
    """A fractional TTL is floored, so the stored copy never outlives the promise."""
    assert 69 == rules.cache_ttl(token(lifetime=99.9), now=NOW, skew=30)


def test_cache_ttl_counts_from_now_not_from_issue() -> None:
    """A token issued earlier has only what remains of its life cached."""
    assert 570 == rules.cache_ttl(token(lifetime=3600, issued_at=NOW - 3000), now=NOW, skew=30)


@pytest.mark.parametrize("lifetime", [30, 20, 0.5, -10])
def test_cache_ttl_is_not_positive_within_the_skew(lifetime: float) -> None:
    """A token that dies within the skew gets a TTL <= 0, meaning: do not cache it."""
    assert rules.cache_ttl(token(lifetime=lifetime), now=NOW, skew=30) <= 0


def test_refresh_at_leads_expiry_by_refresh_before() -> None:
    """A long-lived token is refreshed refresh_before seconds ahead of its skewed expiry."""
    assert NOW + 3600 - 30 - 300 == rules.refresh_at(
        token(lifetime=3600), skew=30, refresh_before=300
    )


def test_refresh_at_leads_by_at_most_half_the_lifetime() -> None:
    """A short-lived token is refreshed no earlier than half-way through its life."""
    assert NOW + 1 == rules.refresh_at(token(lifetime=2), skew=0, refresh_before=300)


def test_remaining_is_validity_left_after_skew() -> None:
    """Remaining validity is expiry minus skew minus now."""
    assert 570 == rules.remaining(token(lifetime=600), now=NOW, skew=30)


def test_satisfies_holds_exactly_at_min_ttl() -> None:
    """A token with exactly min_ttl seconds left satisfies min_ttl."""
    assert rules.satisfies(token(lifetime=90), now=NOW, skew=30, min_ttl=60)


def test_satisfies_fails_below_min_ttl() -> None:
    """A token with less than min_ttl seconds left after the skew does not satisfy it."""
    assert not rules.satisfies(token(lifetime=89), now=NOW, skew=30, min_ttl=60)


@pytest.mark.parametrize("name", ["acme", "a", "9", "Acme-Prod_1.eu", "x" * 64, "a..b", "a-"])
def test_valid_realm_names_are_accepted(name: str) -> None:
    """Names of 1 to 64 ASCII letters, digits, dot, dash, underscore, led by an alphanumeric."""
    assert rules.is_valid_realm(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../x",
        "a/b",
        "a b",
        "x" * 65,
        "\x00",
        "acme\x00",
        "acme\n",
        "\nacme",
        ".acme",
        "-acme",
        "_acme",
        "acmé",
        "\uff41\uff43\uff4d\uff45",  # "acme" in fullwidth letters
        "acme\u0661",  # an Arabic-Indic digit one
        "acme%2F",
        "acme:prod",
    ],
)
def test_invalid_realm_names_are_rejected(name: str) -> None:
    """Traversal, whitespace, control and non-ASCII characters and overlong names are refused."""
    assert not rules.is_valid_realm(name)


def test_token_key_is_prefix_token_realm() -> None:
    """A realm's token lives at {prefix}:token:{realm}, the realm as a hash tag."""
    assert "atlas-broker:token:{acme}" == rules.token_key("atlas-broker", "acme")


def test_lock_key_shares_the_prefix() -> None:
    """A realm's fetch lock lives under the same prefix as its token."""
    assert "atlas-broker:lock:{acme}" == rules.lock_key("atlas-broker", "acme")


def test_keys_of_one_realm_share_a_cluster_hash_slot() -> None:
    """Token, lock and backoff keys of a realm carry the same hash tag, so one slot."""
    keys = [
        rules.token_key("p", "acme"),
        rules.lock_key("p", "acme"),
        rules.backoff_key("p", "acme"),
    ]
    assert {"acme"} == {key[key.index("{") + 1 : key.index("}")] for key in keys}
