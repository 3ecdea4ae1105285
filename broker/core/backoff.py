"""The IdP retry schedule: capped exponential backoff with jitter (pure)."""

from __future__ import annotations

import random


def backoff_delay(
    failures: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait after the `failures`-th consecutive failure: `base · 2^(n-1)`,
    capped, then scaled by a random factor in [0.5, 1] so replicas and realms spread out
    ("equal jitter"). The factor never exceeds 1, so the schedule's upper bound holds."""
    if failures <= 0:
        return 0.0
    ceiling = min(cap, base * 2.0 ** min(failures - 1, 32))
    draw = rng.random() if rng is not None else random.random()  # noqa: S311 - jitter, not crypto
    return ceiling * (0.5 + 0.5 * draw)


def max_attempts(window: float, *, base: float, cap: float) -> int:
    """The most IdP attempts the schedule allows in `window` seconds (delays at their
    shortest, half the ceiling): the bound an outage must stay under."""
    attempts, elapsed, failures = 1, 0.0, 1
    while True:
        elapsed += min(cap, base * 2.0 ** min(failures - 1, 32)) * 0.5
        if elapsed > window:
            return attempts
        attempts += 1
        failures += 1
