"""Ending tasks without losing the caller's own cancellation."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Task[Any]) -> None:
    """Cancel `tasks` and wait until each has ended.

    Unlike `with suppress(CancelledError): await task`, a cancellation of the *caller*
    while it waits is not swallowed: `asyncio.wait` raises it, the tasks' own outcomes it
    does not."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: the caller asked for an end, not a result
