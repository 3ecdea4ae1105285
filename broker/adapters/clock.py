"""`SystemClock`: the wall clock JWT `exp` values are measured against, the monotonic clock
deadlines are measured on, and the event loop's sleep."""

import asyncio
import time


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
