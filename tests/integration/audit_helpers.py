"""Reading a broker's audit stream in Redis, and waiting for it to hold what a test expects."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import redis

from polling import read_until


def stream_events(redis_url: str, prefix: str) -> list[dict[str, Any]]:
    """Every event in `{prefix}:audit`, oldest first."""
    with redis.Redis.from_url(redis_url) as client:
        entries = client.xrange(f"{prefix}:audit")
    return [json.loads(fields[b"e"]) for _, fields in entries]


def wait_for_stream(
    redis_url: str,
    prefix: str,
    done: Callable[[list[dict[str, Any]]], bool],
    *,
    timeout: float = 20.0,
) -> list[dict[str, Any]]:
    """Read the stream until `done(events)` holds, or the deadline passes; the last read."""
    return read_until(lambda: stream_events(redis_url, prefix), done, timeout=timeout)


def with_request_ids(events: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [e for e in events if str(e.get("request_id", "")).startswith(prefix)]
