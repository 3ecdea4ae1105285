"""`DependencyMonitor`: each dependency's state for /readyz and the `dependency_up` gauge."""

from __future__ import annotations

import asyncio

from broker.core.errors import SecretSourceUnavailable
from broker.http.health_monitor import DependencyMonitor
from fakes import eventually


class Dependency:
    """A dependency whose ping answers as the test says; counts pings."""

    def __init__(self) -> None:
        self.pings = 0
        self.fail_with: BaseException | None = None

    async def ping(self) -> None:
        self.pings += 1
        if self.fail_with is not None:
            raise self.fail_with


async def test_unexpected_ping_error_is_reported_failing() -> None:
    """A ping that raises something unforeseen counts as failing, it does not raise."""
    vault = Dependency()
    vault.fail_with = RuntimeError("hvac blew up")

    checks = await DependencyMonitor({"vault": vault}).check()

    assert {"vault": "failing"} == checks


async def test_watch_survives_an_unexpected_ping_error() -> None:
    """After a ping raised something unforeseen, the watch goes on and the gauge follows the
    dependency's recovery instead of freezing."""
    vault = Dependency()
    vault.fail_with = RuntimeError("hvac blew up")
    monitor = DependencyMonitor({"vault": vault})
    watch = asyncio.create_task(monitor.watch(interval=0))
    await eventually(lambda: vault.pings >= 1)
    vault.fail_with = None

    await eventually(lambda: monitor.snapshot() == {"vault": True})

    watch.cancel()
    await asyncio.gather(watch, return_exceptions=True)


async def test_expected_ping_error_is_reported_failing() -> None:
    """A dependency answering with the broker's own error is failing."""
    vault = Dependency()
    vault.fail_with = SecretSourceUnavailable("vault: ConnectError")

    assert {"vault": "failing"} == await DependencyMonitor({"vault": vault}).check()
