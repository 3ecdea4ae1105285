"""Waiting for a state, the one way the tests do it: check a condition until it holds.

The timeout only keeps a broken test from hanging; it is never an assertion about how
fast something happens. `wait_for` blocks (for tests that drive processes and servers);
`eventually` yields to the event loop between checks (for tests running inside it).
Both return the condition's first truthy value, so a check can also fetch what it found.
`read_until` never fails: it returns the last value read, for a test that asserts on it
and so shows what it saw when the state never came.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    *,
    timeout: float = 10.0,
    message: str | Callable[[], str] = "condition not reached",
    interval: float = 0.05,
) -> T:
    """Call `condition` every `interval` seconds until it returns something truthy, and
    return that; fail with `message` (a string, or a function making it at the deadline)
    after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(_text(message, timeout))
        time.sleep(interval)


def read_until(
    read: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
) -> T:
    """Call `read` every `interval` seconds until `done` holds for what it returned, or
    `timeout` seconds passed; returns the last value read either way."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


@overload
async def eventually(
    condition: Callable[[], Awaitable[T]],
    *,
    timeout: float = ...,  # noqa: ASYNC109 - as below
    message: str | Callable[[], str] = ...,
    interval: float = ...,
) -> T: ...


@overload
async def eventually(
    condition: Callable[[], T],
    *,
    timeout: float = ...,  # noqa: ASYNC109 - as below
    message: str | Callable[[], str] = ...,
    interval: float = ...,
) -> T: ...


async def eventually(
    condition: Callable[[], Any],
    *,
    # A deadline for the whole wait, not an I/O timeout: asyncio.timeout would cancel a
    # check half-way instead of failing with the message.
    timeout: float = 10.0,  # noqa: ASYNC109
    message: str | Callable[[], str] = "condition not reached",
    interval: float = 0.0,
) -> Any:
    """`wait_for` inside the event loop, for a plain or an async `condition`: between
    checks other tasks run (an `interval` of 0 only yields the loop once), so a state
    they are about to reach is seen at once."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = condition()
        result = await outcome if inspect.isawaitable(outcome) else outcome
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(_text(message, timeout))
        await asyncio.sleep(interval)


def _text(message: str | Callable[[], str], timeout: float) -> str:
    text = message if isinstance(message, str) else message()
    return f"{text} (within {timeout:g} s)"
