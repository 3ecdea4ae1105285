"""`JsonLinesAuditSink`: one JSON object per line, for log shippers and SIEMs."""

from __future__ import annotations

import json
import sys
from typing import TextIO

from broker.core.audit import AuditEvent


class JsonLinesAuditSink:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    async def emit(self, event: AuditEvent) -> None:
        self._stream.write(json.dumps(event.as_json(), separators=(",", ":")) + "\n")
        self._stream.flush()

    async def aclose(self) -> None:
        self._stream.flush()
