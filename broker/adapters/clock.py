"""`SystemClock`: the wall clock JWT `exp` values are measured against."""

import time


class SystemClock:
    def now(self) -> float:
        return time.time()
