"""`KeyedSingleFlight`: concurrent requests for one key share one load.

Each waiter brings its own acceptance predicate and the shared result is checked against
every one of them, not only against the predicate of whoever started the load:

- the load sees the waiters' needs through `Demand`: `accepts(value)` holds when every
  waiter so far accepts `value` (so a stored value is only taken when it suits them
  all), and `commit()` marks the moment the load stops looking and produces a value
  of its own (an IdP request): that value is the best there is for the waiters present;
- a waiter whose predicate refuses the result starts over (joining the next load, or
  starting one) unless the load had committed with it present; after `attempts` loads
  it gets `Unsatisfied`;
- a load that raises `Superseded` (its value went stale before it finished) is started
  over for its waiters, at most `supersessions` times, then they get `SupersededTooOften`.

A waiter that is cancelled leaves the load running for the others (`asyncio.shield`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from broker.core.cancellation import cancel_and_wait

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Accept = Callable[[V], bool]


class Superseded(Exception):
    """Raised by a load whose value went stale before it finished: start over."""


class SupersededTooOften(Exception):
    """Every load of a waiter's bounded series was superseded."""


class Unsatisfied(Exception, Generic[V]):
    """The waiter's predicate refused a value the load committed to, or every value of
    its bounded series of loads. `value` is the last one."""

    def __init__(self, value: V) -> None:
        super().__init__("no load produced an acceptable value")
        self.value = value


class Demand(Generic[V]):
    """What the waiters of one load need, as the load sees it."""

    def __init__(self) -> None:
        self._waiters: dict[int, Accept[V]] = {}
        self._committed: set[int] = set()
        self._ids = itertools.count()

    def accepts(self, value: V) -> bool:
        """Whether every current waiter accepts `value`."""
        return all(accept(value) for accept in list(self._waiters.values()))

    def commit(self) -> None:
        """The load now produces its own value: it is final for the waiters present."""
        self._committed.update(self._waiters)

    def join(self, accept: Accept[V]) -> int:
        waiter = next(self._ids)
        self._waiters[waiter] = accept
        return waiter

    def leave(self, waiter: int) -> bool:
        """Forget the waiter; returns whether the load had committed with it present."""
        self._waiters.pop(waiter, None)
        return waiter in self._committed


class _Flight(Generic[V]):
    __slots__ = ("demand", "task")

    def __init__(self, demand: Demand[V], task: asyncio.Task[V]) -> None:
        self.demand = demand
        self.task = task


class KeyedSingleFlight(Generic[K, V]):
    def __init__(self, *, name: str, attempts: int = 3, supersessions: int = 3) -> None:
        self._name = name
        self._attempts = attempts
        self._supersessions = supersessions
        self._flights: dict[K, _Flight[V]] = {}

    async def run(self, key: K, load: Callable[[Demand[V]], Awaitable[V]], accept: Accept[V]) -> V:
        """The value of the key's current load (started now if none runs) that `accept`
        takes. Raises Unsatisfied, SupersededTooOften, or the load's own error."""
        attempts = supersessions = 0
        while True:
            flight = self._join(key, load)
            waiter = flight.demand.join(accept)
            committed = False
            try:
                value = await asyncio.shield(flight.task)
            except Superseded:
                supersessions += 1
                if supersessions >= self._supersessions:
                    raise SupersededTooOften(f"{supersessions} loads superseded") from None
                continue
            finally:
                committed = flight.demand.leave(waiter)
            if accept(value):
                return value
            attempts += 1
            if committed or attempts >= self._attempts:
                raise Unsatisfied(value)

    def running(self, key: K) -> bool:
        flight = self._flights.get(key)
        return flight is not None and not flight.task.done()

    async def aclose(self) -> None:
        """Cancel every load and wait for them to end."""
        await cancel_and_wait(*(flight.task for flight in self._flights.values()))
        self._flights.clear()

    def _join(self, key: K, load: Callable[[Demand[V]], Awaitable[V]]) -> _Flight[V]:
        flight = self._flights.get(key)
        # A finished load stays in the map until its done-callback runs on the next loop
        # turn; awaiting it again would not yield, so start a new one instead.
        if flight is not None and not flight.task.done():
            return flight
        demand: Demand[V] = Demand()

        async def loading() -> V:
            return await load(demand)

        task = asyncio.create_task(loading(), name=f"{self._name}:{key}")
        flight = self._flights[key] = _Flight(demand, task)
        task.add_done_callback(lambda done: self._ended(key, done))
        return flight

    def _ended(self, key: K, done: asyncio.Task[V]) -> None:
        current = self._flights.get(key)
        if current is not None and current.task is done:
            del self._flights[key]
        if not done.cancelled():
            done.exception()  # retrieved: its waiters got it
