"""`MinTtlGuard`, through the broker on fakes: a min_ttl no token can meet costs no IdP
request, and fetches forced by min_ttl happen at most once per interval."""

from __future__ import annotations

import pytest

from broker.core.broker import BrokerTimings
from broker.core.errors import MinTtlUnsatisfiable
from broker.core.models import TokenSource
from harness import FAST, Harness, MakeHarness

INTERVAL = 10.0
# The newest token (3600 s, skew 30) meets this only when less than 10 s old.
NEAR_FULL = 3560


@pytest.fixture
def h(make_harness: MakeHarness) -> Harness:
    return make_harness(
        timings=BrokerTimings(
            expiry_skew=FAST.expiry_skew,
            refresh_before=FAST.refresh_before,
            peer_poll_min=FAST.peer_poll_min,
            peer_poll_max=FAST.peer_poll_max,
            forced_fetch_interval=INTERVAL,
        )
    )


async def test_min_ttl_beyond_the_known_lifetime_makes_no_idp_request(h: Harness) -> None:
    """Once a token of the realm was seen, a min_ttl beyond its lifetime is refused at once."""
    await h.broker.token("acme")

    for _ in range(20):
        with pytest.raises(MinTtlUnsatisfiable):
            await h.broker.token("acme", min_ttl=86400)

    assert 1 == h.issuer.fetches


async def test_min_ttl_beyond_reach_has_no_retry_after(h: Harness) -> None:
    """A min_ttl no token can meet is not worth retrying: no Retry-After."""
    await h.broker.token("acme")

    with pytest.raises(MinTtlUnsatisfiable) as caught:
        await h.broker.token("acme", min_ttl=86400)

    assert caught.value.retry_after is None


async def test_first_forced_fetch_is_made(h: Harness) -> None:
    """A min_ttl above the newest token's remaining life fetches a new token once."""
    await h.broker.token("acme")
    h.advance(20)

    issued = await h.broker.token("acme", min_ttl=NEAR_FULL)

    assert (TokenSource.IDP, 2) == (issued.source, h.issuer.fetches)


async def test_second_forced_fetch_within_the_interval_is_refused(h: Harness) -> None:
    """Inside the interval, another forced fetch is a 422 with the seconds left to wait."""
    await h.broker.token("acme")
    h.advance(20)
    await h.broker.token("acme", min_ttl=NEAR_FULL)
    h.advance(INTERVAL - 4)  # the new token is 6 s old: still meets NEAR_FULL

    with pytest.raises(MinTtlUnsatisfiable) as caught:
        await h.broker.token("acme", min_ttl=NEAR_FULL + 5)

    assert (4, 2) == (caught.value.retry_after, h.issuer.fetches)


async def test_forced_fetch_is_allowed_again_after_the_interval(h: Harness) -> None:
    """Once the interval has passed, a forced fetch is made again."""
    await h.broker.token("acme")
    h.advance(20)
    await h.broker.token("acme", min_ttl=NEAR_FULL)
    h.advance(INTERVAL + 1)

    issued = await h.broker.token("acme", min_ttl=NEAR_FULL)

    assert (TokenSource.IDP, 3) == (issued.source, h.issuer.fetches)


async def test_forced_fetch_window_is_shared_with_other_replicas(
    h: Harness, make_harness: MakeHarness
) -> None:
    """A forced fetch on one replica closes the window on another sharing the store."""
    peer = make_harness(peer_of=h)
    await h.broker.token("acme")
    await peer.broker.token("acme")
    h.advance(20)
    await h.broker.token("acme", min_ttl=NEAR_FULL)
    h.advance(5)

    with pytest.raises(MinTtlUnsatisfiable):
        await peer.broker.token(
            "acme", min_ttl=NEAR_FULL + 8
        )  # more than the newest token has left

    assert 2 == h.issuer.fetches + peer.issuer.fetches


async def test_forced_fetch_window_holds_locally_while_the_store_is_down(h: Harness) -> None:
    """With the store out of reach the replica keeps its own window."""
    await h.broker.token("acme")
    h.store.down = True
    h.advance(20)
    await h.broker.token("acme", min_ttl=NEAR_FULL)
    h.advance(5)

    with pytest.raises(MinTtlUnsatisfiable):
        await h.broker.token("acme", min_ttl=NEAR_FULL + 8)  # more than the newest token has left

    assert 2 == h.issuer.fetches


async def test_refresh_is_not_limited_by_the_window(h: Harness) -> None:
    """A refresh of a token due for it is made even right after a forced fetch."""
    await h.broker.token("acme")
    h.advance(20)
    await h.broker.token("acme", min_ttl=NEAR_FULL)

    await h.clock.run_until(lambda: h.issuer.fetches == 3, max_jumps=200)

    assert 3 == h.issuer.fetches


async def test_token_from_an_older_secret_is_replaced_despite_the_window(h: Harness) -> None:
    """A fetch that replaces a token of an older secret version is not a forced one."""
    await h.broker.token("acme")
    h.advance(20)
    await h.broker.token("acme", min_ttl=NEAR_FULL)  # opens the window
    h.secrets.rotate("acme")
    h.broker.start()

    await h.clock.run_until(lambda: 2 in h.issuer.versions_seen)

    assert 2 == (await h.broker.token("acme")).token.credential_version
