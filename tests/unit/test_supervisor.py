"""`TaskSupervisor`: the one owner of background tasks, on virtual time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from broker.core.supervisor import TaskSupervisor
from fakes import FakeClock, eventually


class Loop:
    """A background loop that crashes its first `crashes` runs, then waits forever."""

    def __init__(self, *, crashes: int = 0) -> None:
        self.crashes = crashes
        self.runs = 0
        self.cancelled = False

    async def __call__(self) -> None:
        self.runs += 1
        if self.runs <= self.crashes:
            raise RuntimeError("loop crashed")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


@pytest.fixture
async def supervisor() -> AsyncIterator[TaskSupervisor]:
    """A supervisor on virtual time, closed after the test."""
    supervisor = TaskSupervisor(FakeClock(), restart_min=1.0, restart_max=8.0)
    yield supervisor
    await supervisor.aclose()


async def test_crashed_task_is_logged_and_restarted_after_a_delay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A task that crashes is logged with its name and runs again once the delay passed."""
    clock = FakeClock()
    supervisor = TaskSupervisor(clock, restart_min=1.0)
    loop = Loop(crashes=1)
    with caplog.at_level(logging.ERROR, logger="broker.core.supervisor"):
        supervisor.start("health", loop)
        await clock.run_until(lambda: loop.runs == 2)

    assert (1.0, ["health"]) == (
        clock.monotonic(),
        [record.task for record in caplog.records],  # type: ignore[attr-defined]
    )
    await supervisor.aclose()


async def test_restart_delay_grows_up_to_its_cap() -> None:
    """Crash after crash, the restart delay doubles up to restart_max."""
    clock = FakeClock()
    supervisor = TaskSupervisor(clock, restart_min=1.0, restart_max=4.0)
    loop = Loop(crashes=5)
    supervisor.start("watch", loop)

    await clock.run_until(lambda: loop.runs == 6)

    assert 1 + 2 + 4 + 4 + 4 == clock.monotonic()
    await supervisor.aclose()


async def test_a_running_name_is_not_started_twice(supervisor: TaskSupervisor) -> None:
    """Starting a name that runs already does nothing: no second copy, none overwritten."""
    first, second = Loop(), Loop()
    supervisor.start("invalidations", first)

    started = supervisor.start("invalidations", second)
    await eventually(lambda: first.runs == 1)

    assert (False, 0) == (started, second.runs)
    await supervisor.aclose()


async def test_aclose_cancels_and_awaits_every_task(supervisor: TaskSupervisor) -> None:
    """aclose() returns only once every task has seen its cancellation."""
    loops = [Loop() for _ in range(3)]
    for number, loop in enumerate(loops):
        supervisor.start(f"loop-{number}", loop)
    await eventually(lambda: all(loop.runs == 1 for loop in loops))

    await supervisor.aclose()

    assert [True, True, True] == [loop.cancelled for loop in loops]


async def test_crashed_essential_task_is_reported_failed_and_not_restarted() -> None:
    """An essential task that crashes is listed in failed() and not run again."""
    clock = FakeClock()
    supervisor = TaskSupervisor(clock)
    loop = Loop(crashes=1)
    supervisor.start("vault-token", loop, essential=True)

    await eventually(lambda: supervisor.failed() == ["vault-token"])
    clock.advance(3600)
    await asyncio.sleep(0)

    assert (1, False) == (loop.runs, supervisor.running("vault-token"))


async def test_task_that_returns_is_not_restarted(supervisor: TaskSupervisor) -> None:
    """A task that finishes normally is done: not restarted, not failed."""
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1

    supervisor.start("refresh:acme", once)
    await eventually(lambda: not supervisor.running("refresh:acme"))

    assert (1, []) == (runs, supervisor.failed())
