"""A new secret version the IdP refuses leaves the realm serving with the last one that
worked, degraded, and the new version is retried until it passes."""

from __future__ import annotations

import pytest

from broker.core.broker import BrokerTimings
from broker.core.errors import IdPRejected
from harness import ADMIN, CTX, Harness, MakeHarness


async def test_refused_new_version_on_rotate_keeps_the_realm_serving(h: Harness) -> None:
    """Rotating to a secret the IdP refuses still gives a token, from the old secret."""
    await h.broker.token("acme")
    h.secrets.rotate("acme")
    h.issuer.refused_versions.add(2)

    status = await h.broker.rotate("acme", actor=ADMIN, ctx=CTX)
    issued = await h.broker.token("acme")

    assert (1, True, 2) == (
        issued.token.credential_version,
        status.degraded,
        status.rejected_version,
    )


async def test_refused_new_version_is_audited_with_both_versions(h: Harness) -> None:
    """`credentials.rejected` names the version in use and the refused one, once."""
    await h.broker.token("acme")
    h.secrets.rotate("acme")
    h.issuer.refused_versions.add(2)
    await h.broker.rotate("acme", actor=ADMIN, ctx=CTX)
    await h.broker.evict("acme", actor=ADMIN, ctx=CTX)
    await h.broker.token("acme")

    assert [(1, 2, "invalid_client")] == [
        (e.credential_version, e.rejected_version, e.reason)
        for e in h.audit.named("credentials.rejected")
    ]


async def test_refused_version_from_the_vault_watch_keeps_the_realm_serving(
    make_harness: MakeHarness,
) -> None:
    """A new version noticed by the Vault watch and refused by the IdP leaves the old token
    in use and the realm degraded."""
    h = make_harness(timings=BrokerTimings(vault_poll=0.01))
    await h.broker.token("acme")
    h.secrets.rotate("acme")
    h.issuer.refused_versions.add(2)
    h.broker.start()

    await h.clock.run_until(lambda: bool(h.audit.named("credentials.rejected")))
    issued = await h.broker.token("acme")

    assert (1, True) == (issued.token.credential_version, h.broker.realm_status("acme").degraded)


async def test_refused_version_is_retried_and_ends_the_degradation_once_accepted(
    make_harness: MakeHarness,
) -> None:
    """Once the IdP accepts the new version (the client was updated there), the retry on
    the backoff schedule moves the realm to it and the realm is no longer degraded."""
    h = make_harness(timings=BrokerTimings(vault_poll=0.01, idp_backoff_max=2.0))
    await h.broker.token("acme")
    h.secrets.rotate("acme")
    h.issuer.refused_versions.add(2)
    h.broker.start()
    await h.clock.run_until(lambda: h.broker.realm_status("acme").degraded)

    h.issuer.refused_versions.clear()
    await h.clock.run_until(lambda: not h.broker.realm_status("acme").degraded)
    issued = await h.broker.token("acme")

    assert (2, 2) == (
        issued.token.credential_version,
        h.broker.realm_status("acme").credential_version,
    )


async def test_refused_version_is_not_retried_before_its_retry_time(
    make_harness: MakeHarness,
) -> None:
    """While degraded, the IdP sees the refused version again only on the retry schedule,
    not on every Vault poll."""
    h = make_harness(
        timings=BrokerTimings(vault_poll=0.01, idp_backoff_base=100.0, idp_backoff_max=100.0)
    )
    await h.broker.token("acme")
    h.secrets.rotate("acme")
    h.issuer.refused_versions.add(2)
    h.broker.start()
    await h.clock.run_until(lambda: h.broker.realm_status("acme").degraded)
    seen = list(h.issuer.versions_seen)

    h.advance(40)  # 4000 polls, all before the retry (at least 50 s after the refusal)
    await h.clock.run_until(lambda: h.secrets.version_reads > 100)

    assert seen == h.issuer.versions_seen


async def test_realm_fails_when_the_old_version_is_refused_too(h: Harness) -> None:
    """Without a version the IdP still accepts, the refusal reaches the caller as before."""
    await h.broker.token("acme")
    h.secrets.rotate("acme")
    h.issuer.refused_versions.update({1, 2})
    await h.broker.evict("acme", actor=ADMIN, ctx=CTX)

    with pytest.raises(IdPRejected):
        await h.broker.token("acme")


async def test_rotate_tries_a_refused_version_again_at_once(h: Harness) -> None:
    """While degraded, the rotate operation asks the IdP with the refused version at once
    (the IdP may have been fixed), not when its retry comes."""
    await h.broker.token("acme")
    h.secrets.rotate("acme")
    h.issuer.refused_versions.add(2)
    await h.broker.rotate("acme", actor=ADMIN, ctx=CTX)
    h.issuer.refused_versions.clear()

    status = await h.broker.rotate("acme", actor=ADMIN, ctx=CTX)

    assert (False, 2) == (status.degraded, status.credential_version)
