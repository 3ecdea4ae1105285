"""A client flooding the broker with made-up realm names, unauthenticated or as a caller
allowed every realm, cannot grow what /metrics exposes: label values come only from the
configuration (realms with credentials, callers in the policy)."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from stack import Stack, bearer

FLOOD = 10_000


def series(text: str) -> set[str]:
    """The exposed series: every sample line's name and labels, without its value."""
    return {
        line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")
    }


async def flood(url: str, realms: list[str], headers: dict[str, str]) -> set[int]:
    """Ask for a token of each realm, 16 requests at a time; the statuses answered."""
    statuses: set[int] = set()
    queue = iter(realms)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:

        async def worker() -> None:
            for realm in queue:
                response = await client.get(f"/v1/realms/{realm}/token")
                statuses.add(response.status_code)

        await asyncio.gather(*(worker() for _ in range(16)))
    return statuses


def random_realms(count: int) -> list[str]:
    return [f"r{uuid.uuid4().hex[:12]}" for _ in range(count)]


def test_random_realm_names_do_not_grow_the_metric_series(stack: Stack) -> None:
    """10,000 made-up realm names, half sent without valid credentials and half by a caller
    allowed every realm, leave the set of exposed series as it was after the first few."""
    broker = stack.start_broker()
    realm = stack.new_realm()
    assert 200 == stack.get_token(broker.url, realm.name).status_code
    wrong_key = bearer("not-a-key-" + uuid.uuid4().hex)
    everything = bearer(stack.keys.everything)
    # A few of each kind first (and one scrape), so every fixed series exists before counting.
    httpx.get(f"{broker.url}/metrics")
    asyncio.run(flood(broker.url, random_realms(20), wrong_key))
    asyncio.run(flood(broker.url, random_realms(20), everything))
    asyncio.run(flood(broker.url, random_realms(20), {}))
    before = series(httpx.get(f"{broker.url}/metrics").text)

    unauthenticated = asyncio.run(flood(broker.url, random_realms(FLOOD // 2), wrong_key))
    allowed_all = asyncio.run(flood(broker.url, random_realms(FLOOD // 2), everything))

    after = series(httpx.get(f"{broker.url}/metrics").text)
    assert {401} == unauthenticated
    assert {404} == allowed_all
    assert set() == after - before
    assert any(f'realm="{realm.name}"' in line for line in after)
