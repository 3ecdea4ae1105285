"""Single flight: however many callers and replicas miss at once, the IdP is asked once."""

from __future__ import annotations

import asyncio

import httpx

from atlas_broker_dev.processes import free_port
from stack import Stack, bearer


async def burst(stack: Stack, urls: list[str], realm: str, count: int) -> list[httpx.Response]:
    """`count` concurrent token requests spread round-robin over `urls`."""
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        responses = await asyncio.gather(
            *(
                client.get(
                    f"{urls[i % len(urls)]}/v1/realms/{realm}/token",
                    headers=bearer(stack.keys.everything),
                )
                for i in range(count)
            )
        )
    for response in responses:
        stack.served_tokens(response)
    return list(responses)


async def test_200_concurrent_cold_requests_make_one_idp_request(stack: Stack) -> None:
    """200 concurrent requests on a cold cache of one broker: one IdP request, one token."""
    url = stack.start_broker().url
    realm = stack.new_realm()
    stack.set_fault(realm.name, "delay", seconds=0.5)  # hold the fetch while the rest arrive
    responses = await burst(stack, [url], realm.name, 200)
    assert [200] * 200 == [r.status_code for r in responses]
    assert 1 == len({r.json()["access_token"] for r in responses})
    assert 1 == stack.idp_requests(realm.name)


async def test_three_replicas_300_cold_requests_make_one_idp_request(stack: Stack) -> None:
    """Three broker processes sharing Redis, 300 concurrent cold requests: one IdP request."""
    urls = [server.url for server in stack.start_brokers(3)]
    realm = stack.new_realm()
    stack.set_fault(realm.name, "delay", seconds=0.5)
    responses = await burst(stack, urls, realm.name, 300)
    assert [200] * 300 == [r.status_code for r in responses]
    assert 1 == len({r.json()["access_token"] for r in responses})
    assert 1 == stack.idp_requests(realm.name)


async def test_without_redis_a_replica_still_makes_one_idp_request(stack: Stack) -> None:
    """With its Redis unreachable a broker serves alone, single flight kept in-process."""
    url = stack.start_broker(BROKER_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0").url
    realm = stack.new_realm()
    stack.set_fault(realm.name, "delay", seconds=0.5)
    responses = await burst(stack, [url], realm.name, 100)
    assert [200] * 100 == [r.status_code for r in responses]
    assert 1 == stack.idp_requests(realm.name)


async def test_memory_store_serves_a_single_process(stack: Stack) -> None:
    """BROKER_REDIS_URL=memory:// runs the broker on its embedded store."""
    url = stack.start_broker(BROKER_REDIS_URL="memory://").url
    realm = stack.new_realm()
    responses = await burst(stack, [url], realm.name, 50)
    assert [200] * 50 == [r.status_code for r in responses]
    assert 1 == stack.idp_requests(realm.name)
