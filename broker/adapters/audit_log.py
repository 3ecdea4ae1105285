"""`JsonLinesAuditSink`: one JSON object per line, for log shippers and SIEMs.

This is a copy of the trail, not the trail of record (that is the Redis stream with its
spool), so lines are written at once but flushed at most every quarter second: one
system call per burst instead of one per issuance. Closing flushes what is left.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from broker.core.audit import AuditEvent

FLUSH_DELAY = 0.25


class JsonLinesAuditSink:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout
        self._flush_pending: asyncio.TimerHandle | None = None

    async def emit(self, event: AuditEvent) -> None:
        self._stream.write(event.json_line() + "\n")
        if self._flush_pending is None:
            self._flush_pending = asyncio.get_running_loop().call_later(FLUSH_DELAY, self._flush)

    def _flush(self) -> None:
        self._flush_pending = None
        self._stream.flush()

    async def aclose(self) -> None:
        if self._flush_pending is not None:
            self._flush_pending.cancel()
        self._flush()
