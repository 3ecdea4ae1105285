"""Graceful shutdown: SIGTERM stops accepting, finishes in-flight requests, flushes the
audit and releases the fetch lock."""

from __future__ import annotations

import asyncio
import signal

import httpx
import redis

from audit_helpers import stream_events
from broker.core.rules import lock_key
from polling import eventually
from stack import Stack, bearer


async def test_sigterm_during_a_burst_loses_no_response_and_no_audit_event(stack: Stack) -> None:
    """50 requests waiting on a slow IdP when SIGTERM arrives all get their token, and the
    audit stream holds all 50 issuances after the process has exited."""
    prefix = "shutdown"
    broker = stack.start_broker(BROKER_KEY_PREFIX=prefix)
    realm = stack.new_realm()
    stack.set_fault(realm.name, "delay", seconds=1.5)
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        requests = [
            asyncio.create_task(
                client.get(
                    f"{broker.url}/v1/realms/{realm.name}/token",
                    headers=bearer(stack.keys.everything),
                )
            )
            for _ in range(50)
        ]
        await eventually(  # the burst waits on the IdP now
            lambda: stack.idp_requests(realm.name) >= 1,
            interval=0.02,
            message="no request reached the IdP",
        )
        broker.process.signal(signal.SIGTERM)
        responses = await asyncio.gather(*requests)
    for response in responses:
        stack.served_tokens(response)
    assert broker.process.proc is not None
    broker.process.proc.wait(timeout=30)  # uvicorn re-raises SIGTERM once it is done
    assert "Application shutdown complete." in broker.process.log_path.read_text()

    assert [200] * 50 == [r.status_code for r in responses]
    issued = [
        e
        for e in stream_events(stack.redis.url, prefix)
        if e["event"] == "token.issued" and e["realm"] == realm.name
    ]
    assert sorted(r.headers["x-request-id"] for r in responses) == sorted(
        e["request_id"] for e in issued
    )
    assert 0 == redis.Redis.from_url(stack.redis.url).exists(lock_key(prefix, realm.name))
    stack.idp_control("DELETE", "/faults")
