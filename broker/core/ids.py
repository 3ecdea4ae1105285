"""Identifiers for requests and audit records: 32 hex digits, as a UUID's, unique across
processes and replicas, without a system call or a UUID object per identifier.

The first half is random per process (drawn again in a forked child), the second a
counter. They name things; they are not secrets, so being guessable in sequence costs
nothing, and uniqueness holds as long as two processes never draw the same 64 bits.
"""

from __future__ import annotations

import itertools
import os
import secrets

_prefix = ""
_counter = itertools.count()


def _reseed() -> None:
    global _prefix, _counter
    _prefix = secrets.token_hex(8)
    _counter = itertools.count()


_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_id() -> str:
    return f"{_prefix}{next(_counter):016x}"
