"""`RealmFetcher`, through the broker: credentials read once, the IdP's failures backed
off and audited, a rotated secret picked up on invalid_client."""

from __future__ import annotations

import pytest

from broker.core.errors import (
    IdPBadResponse,
    IdPRejected,
    IdPUnavailable,
    UpstreamError,
)
from broker.core.models import TokenSource
from harness import BACKOFF_CEILING, Harness, MakeHarness


async def test_credentials_are_read_once_per_realm(h: Harness) -> None:
    """The secret source is read on the realm's first fetch only, not on every fetch."""
    await h.broker.token("acme")
    h.advance(3600)

    await h.broker.token("acme")

    assert (1, 2) == (h.secrets.reads, h.issuer.fetches)


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


async def test_failed_fetch_is_retried_after_the_backoff(h: Harness) -> None:
    """Once the backoff after a failed fetch has passed, the next request asks the IdP."""
    h.issuer.fail_with = IdPUnavailable("down")
    with pytest.raises(IdPUnavailable):
        await h.broker.token("acme")
    h.issuer.fail_with = None
    h.advance(BACKOFF_CEILING)

    issued = await h.broker.token("acme")

    assert (TokenSource.IDP, 2) == (issued.source, h.issuer.fetches)


async def test_secret_source_down_keeps_loaded_credentials_working(h: Harness) -> None:
    """With Vault down, a realm whose credentials were loaded still gets fresh tokens."""
    await h.broker.token("acme")
    h.secrets.unavailable = True
    h.advance(3600)

    issued = await h.broker.token("acme")

    assert (TokenSource.IDP, 2) == (issued.source, h.issuer.fetches)


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
