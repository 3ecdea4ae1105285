"""`TaskSupervisor`: the one owner of the broker's background tasks.

Every long-running task (the core's loops, the Vault token keeper, the health watch) is
started through it, by name. A name runs at most once at a time: starting it again while
it runs does nothing, so no task is overwritten and left running unowned. A task that
returns is done; one that crashes is logged and restarted after a capped exponential
delay, except an *essential* task, which is not restarted: the supervisor then reports it
in `failed()` and readiness turns false. `aclose()` cancels every task and waits for each
to end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from broker.core.cancellation import cancel_and_wait
from broker.core.ports import Clock

log = logging.getLogger(__name__)

TaskFactory = Callable[[], Awaitable[None]]


class TaskSupervisor:
    def __init__(self, clock: Clock, *, restart_min: float = 1.0, restart_max: float = 60.0):
        self._clock = clock
        self._restart_min = restart_min
        self._restart_max = restart_max
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._failed: set[str] = set()
        self._closing = False

    def start(self, name: str, factory: TaskFactory, *, essential: bool = False) -> bool:
        """Run `factory()` as the task `name` unless that task runs already; returns
        whether it was started."""
        if self._closing or self.running(name):
            return False
        self._failed.discard(name)
        task = asyncio.create_task(self._supervise(name, factory, essential), name=name)
        self._tasks[name] = task
        task.add_done_callback(lambda done: self._ended(name, done))
        return True

    def running(self, name: str) -> bool:
        task = self._tasks.get(name)
        return task is not None and not task.done()

    def failed(self) -> list[str]:
        """Essential tasks that crashed: the service cannot work as it should."""
        return sorted(self._failed)

    async def stop(self, name: str) -> None:
        """Cancel the task `name`, if it runs, and wait for it to end."""
        task = self._tasks.get(name)
        if task is not None:
            await cancel_and_wait(task)

    async def aclose(self) -> None:
        """Cancel every task and wait for all of them to end."""
        self._closing = True
        await cancel_and_wait(*self._tasks.values())
        self._tasks.clear()

    async def _supervise(self, name: str, factory: TaskFactory, essential: bool) -> None:
        delay = self._restart_min
        while True:
            started = self._clock.monotonic()
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                if essential:
                    log.exception("essential background task crashed", extra={"task": name})
                    self._failed.add(name)
                    return
                if self._clock.monotonic() - started > self._restart_max:
                    delay = self._restart_min  # it had been healthy: not a crash loop
                log.exception(
                    "background task crashed, restarting",
                    extra={"task": name, "restart_in": delay},
                )
            await self._clock.sleep(delay)
            delay = min(delay * 2, self._restart_max)

    def _ended(self, name: str, done: asyncio.Task[None]) -> None:
        if self._tasks.get(name) is done:
            del self._tasks[name]
