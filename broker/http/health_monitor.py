"""`DependencyMonitor`: each dependency's health, checked live for /readyz and kept
fresh in the background for the `dependency_up` gauge (a scrape must not wait on Vault)."""

from __future__ import annotations

import asyncio
from typing import Literal

from broker.core.errors import BrokerError
from broker.http.state import Pingable

CheckState = Literal["ok", "failing"]


class DependencyMonitor:
    def __init__(self, dependencies: dict[str, Pingable], *, timeout: float = 2.0) -> None:
        self.dependencies = dependencies
        self._timeout = timeout
        self._last: dict[str, bool] = {}

    async def _check(self, dependency: Pingable) -> CheckState:
        try:
            await asyncio.wait_for(dependency.ping(), timeout=self._timeout)
        except (BrokerError, TimeoutError, OSError):
            return "failing"
        return "ok"

    async def check(self) -> dict[str, CheckState]:
        names = list(self.dependencies)
        results = await asyncio.gather(*(self._check(self.dependencies[n]) for n in names))
        checks = dict(zip(names, results, strict=True))
        self._last = {name: state == "ok" for name, state in checks.items()}
        return checks

    def snapshot(self) -> dict[str, bool]:
        return dict(self._last)

    async def watch(self, interval: float = 15.0) -> None:
        while True:
            await self.check()
            await asyncio.sleep(interval)
