"""The routes whose answers come from Redis when the broker has it, in process: the
shared token store, the Redis rate limiter and the audit stream behind `GET /v1/audit`."""

from __future__ import annotations

import uuid
from typing import Any

from inprocess import Api, bearer, problem_of, slug
from polling import eventually


async def test_token_is_served_and_shared_through_redis(redis_api: Api) -> None:
    """A token is served, and the same token again while it is cached."""
    first, second = [
        await redis_api.token(redis_api.realm.name, redis_api.keys.everything) for _ in range(2)
    ]
    assert (200, 200) == (first.status_code, second.status_code)
    assert first.json()["access_token"] == second.json()["access_token"]


async def test_readiness_pings_redis(redis_api: Api) -> None:
    """/readyz reports Redis ok when the broker uses it."""
    response = await redis_api.client.get("/readyz")
    assert "ok" == response.json()["checks"]["redis"]


async def test_redis_rate_limit_is_429_with_retry_after(redis_api: Api) -> None:
    """Past its burst a caller is refused by the Redis rate limiter with 429, Retry-After."""
    responses = [
        await redis_api.token(redis_api.realm.name, redis_api.keys.throttled) for _ in range(2)
    ]
    assert "rate-limited" == slug(problem_of(responses[-1], 429))
    assert int(responses[-1].headers["retry-after"]) >= 1


async def test_audit_stream_is_read_back_page_by_page(redis_api: Api) -> None:
    """An issuance reaches the Redis audit stream and is read back; a page of one event
    carries a cursor that the next request accepts."""
    request_id = uuid.uuid4().hex
    served = await redis_api.client.get(
        f"/v1/realms/{redis_api.realm.name}/token",
        headers={**bearer(redis_api.keys.everything), "X-Request-ID": request_id},
    )
    redis_api.stack.served_tokens(served)

    async def issued() -> list[dict[str, Any]]:
        page = await redis_api.client.get(
            "/v1/audit",
            params={"realm": redis_api.realm.name, "event": "token.issued"},
            headers=bearer(redis_api.keys.auditor),
        )
        return [e for e in page.json()["events"] if e.get("request_id") == request_id]

    found = await eventually(issued, message="the issuance never reached the stream")
    first = await redis_api.client.get(
        "/v1/audit", params={"limit": 1}, headers=bearer(redis_api.keys.auditor)
    )
    cursor = first.json()["next_cursor"]
    older = await redis_api.client.get(
        "/v1/audit", params={"limit": 1, "cursor": cursor}, headers=bearer(redis_api.keys.auditor)
    )
    assert ["api-all"] == [e["caller"] for e in found]
    assert (200, 1) == (older.status_code, len(older.json()["events"]))
    assert first.json()["events"][0]["id"] != older.json()["events"][0]["id"]
