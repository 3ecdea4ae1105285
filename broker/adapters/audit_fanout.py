"""`FanOutAuditSink`: every event to every sink, in the one JSON shape.

The first sink is the trail of record (the Redis stream, or the in-memory ring with
`memory://`); the others are copies for log shippers (JSON lines on stdout or in a file).
The trail of record is written first: when it refuses an event (BROKER_AUDIT_REQUIRED and
nothing durable could hold it), the token is not served, so the copies must not claim it
was. They get the refusal instead, `token.denied` with reason `audit-unavailable`, and the
trail of record gets it too, queued, for when it can write again.

A copy that fails (a closed stdout, a full disk) is logged and skipped: it never fails a
request.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import TextIO

from broker.core.audit import AuditEvent
from broker.core.errors import AuditUnavailable
from broker.core.ports import AuditSink

log = logging.getLogger(__name__)


def open_audit_file(path: Path) -> TextIO:
    """The JSON-lines audit file, appended to, readable by its owner and group only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    return os.fdopen(fd, "a", encoding="utf-8", buffering=1)


def as_refusal(event: AuditEvent) -> AuditEvent:
    """What happened instead of `event` when it could not be recorded: a refusal."""
    return dataclasses.replace(
        event,
        event="token.denied",
        outcome="denied",
        reason=AuditUnavailable.slug,
        source=None,
        token_sha256=None,
        token_expires_at=None,
    )


class FanOutAuditSink:
    def __init__(self, record: AuditSink, *copies: AuditSink) -> None:
        self._record = record
        self._copies = copies

    async def emit(self, event: AuditEvent) -> None:
        try:
            await self._record.emit(event)
        except AuditUnavailable:
            refusal = as_refusal(event)
            await self._record.emit(refusal)  # not a durable-required event: only queued
            await self._copy(refusal)
            raise
        await self._copy(event)

    async def _copy(self, event: AuditEvent) -> None:
        for sink in self._copies:
            try:
                await sink.emit(event)
            except Exception as exc:  # a copy must never fail a request
                log.error(
                    "audit copy failed",
                    extra={"sink": type(sink).__name__, "error": type(exc).__name__},
                )

    async def aclose(self) -> None:
        """Flush the trail of record (it may take a while: see RedisAuditSink), then the copies."""
        await self._record.aclose()
        for sink in self._copies:
            await sink.aclose()
