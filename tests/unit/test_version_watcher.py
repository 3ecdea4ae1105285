"""`VersionWatcher`: a secret rotated in Vault leads to a token from the new secret."""

from __future__ import annotations

import asyncio

from broker.core.broker import BrokerTimings
from broker.core.models import TokenSource
from fakes import eventually
from harness import MakeHarness


async def test_new_secret_version_in_vault_is_picked_up(make_harness: MakeHarness) -> None:
    """A secret rotated in Vault is noticed by the version watch and used for a new token."""
    h = make_harness(timings=BrokerTimings(vault_poll=0.01))
    h.broker.start()
    await h.broker.token("acme")

    h.secrets.rotate("acme")
    await h.clock.run_until(lambda: [1, 2] == h.issuer.versions_seen)
    issued = await h.broker.token("acme")

    assert (TokenSource.MEMORY, 2) == (issued.source, issued.token.credential_version)


async def test_version_watch_ends_with_a_token_from_the_new_secret(
    make_harness: MakeHarness,
) -> None:
    """A new Vault version noticed while a fetch with the old secret is in flight still
    leads to a token obtained with the new secret."""
    h = make_harness(timings=BrokerTimings(vault_poll=0.01))
    await h.broker.token("acme")
    h.advance(200)
    gate = h.issuer.block()
    in_flight = asyncio.create_task(h.broker.token("acme", min_ttl=3500))
    await eventually(lambda: h.issuer.fetches == 2)  # with secret version 1
    h.secrets.rotate("acme")
    h.broker.start()
    await h.clock.run_until(lambda: bool(h.audit.named("credentials.rotated")))
    gate.set()
    await in_flight

    await h.clock.run_until(lambda: 2 in h.issuer.versions_seen)
    assert 2 == (await h.broker.token("acme")).token.credential_version
