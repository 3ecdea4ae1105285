"""Who asked, from where, under which request id: carried into audit events."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str | None = None
    client_ip: str | None = None
