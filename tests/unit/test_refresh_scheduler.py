"""`RefreshScheduler`, on virtual time: successors fetched ahead of expiry, the plan
redone when the token changes, idle realms left to lapse."""

from __future__ import annotations

from collections.abc import Callable

from broker.core.broker import BrokerTimings
from broker.core.models import AccessToken, IssuedToken, TokenSource
from broker.core.realm_state import RealmRegistry
from broker.core.refresh_scheduler import RefreshScheduler, RefreshTimings
from broker.core.supervisor import TaskSupervisor
from fakes import FakeClock, eventually
from harness import ADMIN, CTX, Harness, MakeHarness, live_tasks


async def test_token_is_refreshed_in_the_background(h: Harness) -> None:
    """At the refresh point (300 s before expiry, skew 30 s) the IdP is asked again without
    any caller asking, on virtual time."""
    await h.broker.token("acme")

    await h.clock.run_until(lambda: h.issuer.fetches == 2, max_jumps=200)
    issued = await h.broker.token("acme")

    assert (TokenSource.MEMORY, "token-acme-2", 3600 - 30 - 300) == (
        issued.source,
        issued.token.value,
        h.clock.monotonic(),
    )


async def test_refresher_stops_for_an_idle_realm(make_harness: MakeHarness) -> None:
    """A realm nobody asked for during a whole token lifetime is no longer refreshed."""
    h = make_harness(timings=BrokerTimings(expiry_skew=0, refresh_before=300), lifetime=1200)
    # Refreshed at 900 s (used 900 s before); at 1800 s the realm has been idle for longer
    # than a lifetime, so the refresher ends instead of fetching again.
    await h.broker.token("globex", min_ttl=0)

    await h.clock.run_until(lambda: not live_tasks("refresh:globex"), max_jumps=200)

    assert 2 == h.issuer.fetches


async def test_refresher_sleeps_on_the_clock_until_the_refresh_point(h: Harness) -> None:
    """Before the refresh point nothing is fetched: the refresher sleeps on the clock."""
    await h.broker.token("acme")
    await h.clock.run_until(lambda: h.clock.sleeping() >= 1)

    h.advance(3600 - 30 - 300 - 1)
    await eventually(lambda: h.clock.sleeping() >= 1)

    assert 1 == h.issuer.fetches


async def test_aclose_stops_the_refresher(h: Harness) -> None:
    """aclose() cancels the background refresh tasks."""
    await h.broker.token("acme")
    assert 1 == len(live_tasks("refresh:acme"))

    await h.broker.aclose()

    assert [] == live_tasks("refresh:acme")


async def test_refresher_is_woken_by_a_shorter_lived_successor(h: Harness) -> None:
    """When the realm's token is replaced by one that dies sooner, the refresh is planned
    for the new token, not left sleeping until the old one's refresh point."""
    await h.broker.token("acme")  # 3600 s: refresh due after 3270 s
    await h.broker.evict("acme", actor=ADMIN, ctx=CTX)
    h.issuer.lifetime = 600
    await h.broker.token("acme")  # 600 s: refresh due after 270 s

    await h.clock.run_until(lambda: h.issuer.fetches == 3, max_jumps=200)

    assert h.clock.monotonic() < 600


# --- RefreshScheduler alone ---------------------------------------------------------------


class Obtained:
    """An `obtain` that records the realms asked for and keeps a new token each time."""

    def __init__(self, registry: RealmRegistry, clock: FakeClock) -> None:
        self.registry = registry
        self.clock = clock
        self.realms: list[str] = []

    async def __call__(self, realm: str, acceptable: Callable[[AccessToken], bool]) -> IssuedToken:
        self.realms.append(realm)
        now = self.clock.now()
        token = AccessToken(f"t{len(self.realms)}", now + 3600, now)
        self.registry.state(realm).keep(token)
        return IssuedToken(realm, token, TokenSource.IDP)


async def test_scheduler_starts_a_refresher_when_a_token_is_kept() -> None:
    """Keeping a token in the registry is enough for its refresher to run: nobody calls the
    scheduler."""
    clock = FakeClock()
    registry = RealmRegistry()
    supervisor = TaskSupervisor(clock)
    obtain = Obtained(registry, clock)
    RefreshScheduler(
        registry=registry,
        obtain=obtain,
        clock=clock,
        supervisor=supervisor,
        timings=RefreshTimings(expiry_skew=30, refresh_before=300),
    )
    state = registry.state("acme")
    state.last_used = clock.monotonic()
    now = clock.now()
    state.keep(AccessToken("first", now + 3600, now))

    await clock.run_until(lambda: obtain.realms == ["acme"], max_jumps=50)

    assert (3600 - 30 - 300, True) == (clock.monotonic(), supervisor.running("refresh:acme"))
    await supervisor.aclose()
