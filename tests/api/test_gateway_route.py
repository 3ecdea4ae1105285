"""`/v1/realms/{realm}/gateway[/…]` in process: what a proxy's authorization request gets
(nginx `auth_request`, Envoy `ext_authz`), for every method a proxy may ask with."""

from __future__ import annotations

import pytest

from inprocess import Api, bearer, problem_of, slug

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@pytest.mark.parametrize("method", METHODS)
async def test_allowed_caller_gets_the_token_in_a_header_and_an_empty_body(
    api: Api, method: str
) -> None:
    """200, `Authorization: Bearer <the realm's token>` for the upstream request, nothing
    in the body, and no caching of the answer."""
    response = await api.client.request(
        method, f"/v1/realms/{api.realm.name}/gateway", headers=bearer(api.keys.everything)
    )
    assert 200 == response.status_code, response.text
    scheme, _, token = response.headers["authorization"].partition(" ")
    assert ("Bearer", 3) == (scheme, token.count(".") + 1)
    assert b"" == response.content
    assert "no-store" == response.headers["cache-control"]
    token_route = await api.token(api.realm.name, api.keys.everything)
    assert token == token_route.json()["access_token"]


async def test_a_path_below_the_route_is_the_same_route(api: Api) -> None:
    """A proxy that appends the original URI gets the same answer."""
    response = await api.client.get(
        f"/v1/realms/{api.realm.name}/gateway/api/v1/reports?x=1",
        headers=bearer(api.keys.everything),
    )
    assert 200 == response.status_code, response.text
    assert response.headers["authorization"].startswith("Bearer ")


async def test_unknown_key_is_401_without_a_token(api: Api) -> None:
    response = await api.client.get(
        f"/v1/realms/{api.realm.name}/gateway", headers=bearer("not-a-key-of-anyone")
    )
    assert "unauthenticated" == slug(problem_of(response, 401))
    assert "authorization" not in response.headers


async def test_caller_not_allowed_the_realm_is_403_without_a_token(api: Api) -> None:
    response = await api.client.get(
        f"/v1/realms/{api.realm.name}/gateway", headers=bearer(api.keys.limited)
    )
    assert "forbidden" == slug(problem_of(response, 403))
    assert "authorization" not in response.headers


async def test_every_answer_carries_a_request_id(api: Api) -> None:
    """Allowed or refused, the proxy can log the broker's request id."""
    for key in (api.keys.everything, "not-a-key-of-anyone"):
        response = await api.client.get(
            f"/v1/realms/{api.realm.name}/gateway",
            headers={**bearer(key), "X-Request-ID": "gw-probe-1"},
        )
        assert "gw-probe-1" == response.headers["x-request-id"]
