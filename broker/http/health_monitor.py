"""`DependencyMonitor`: each dependency's health, checked live for /readyz and kept
fresh in the background for the `dependency_up` gauge (a scrape must not wait on Vault).

`watch()` runs under the application's task supervisor, which logs and restarts it should
it ever crash; a ping failing in a way nobody foresaw is reported as `failing` (and
logged) rather than ending the watch, so the gauge never freezes on its last value."""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from broker.core.errors import BrokerError
from broker.http.state import Pingable

log = logging.getLogger(__name__)

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
        except Exception:
            log.exception("dependency check failed unexpectedly")
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
