"""`POST /v1/realms/{realm}/rotate` and `DELETE /v1/realms/{realm}/token` in process:
admins only, and what each does to the realm's token."""

from __future__ import annotations

import pytest

from inprocess import Api, bearer, problem_of, slug


async def test_admin_rotation_loads_the_secret_and_fetches_a_token(api: Api) -> None:
    """Rotation answers the realm's status: a token cached, the Vault version loaded."""
    realm = api.stack.new_realm("api-rotate")
    response = await api.client.post(
        f"/v1/realms/{realm.name}/rotate", headers=bearer(api.keys.admin)
    )
    assert 200 == response.status_code, response.text
    status = response.json()
    assert (realm.name, True, 1) == (
        status["realm"],
        status["cached"],
        status["credential_version"],
    )


async def test_rotation_replaces_the_served_token(api: Api) -> None:
    """After a rotation callers get a token other than the one served before it."""
    realm = api.stack.new_realm("api-rotated")
    before = (await api.token(realm.name, api.keys.everything)).json()["access_token"]
    rotated = await api.client.post(
        f"/v1/realms/{realm.name}/rotate", headers=bearer(api.keys.admin)
    )
    after = (await api.token(realm.name, api.keys.everything)).json()["access_token"]
    assert (200, True) == (rotated.status_code, before != after)


async def test_admin_eviction_is_204_and_the_next_token_is_new(api: Api) -> None:
    """An evicted token is not served again: the next request gets a fresh one."""
    realm = api.stack.new_realm("api-evict")
    before = (await api.token(realm.name, api.keys.everything)).json()["access_token"]
    evicted = await api.client.delete(
        f"/v1/realms/{realm.name}/token", headers=bearer(api.keys.admin)
    )
    after = (await api.token(realm.name, api.keys.everything)).json()["access_token"]
    assert (204, b"", True) == (evicted.status_code, evicted.content, before != after)


@pytest.mark.parametrize(("method", "action"), [("POST", "rotate"), ("DELETE", "token")])
@pytest.mark.parametrize("who", ["everything", "auditor"])
async def test_non_admins_are_refused_with_403(
    api: Api, method: str, action: str, who: str
) -> None:
    """A caller allowed the realm, or an auditor, may not rotate or evict it."""
    key = getattr(api.keys, who)
    response = await api.client.request(
        method, f"/v1/realms/{api.realm.name}/{action}", headers=bearer(key)
    )
    assert "forbidden" == slug(problem_of(response, 403))


@pytest.mark.parametrize(("method", "action"), [("POST", "rotate"), ("DELETE", "token")])
async def test_admin_operations_need_a_credential(api: Api, method: str, action: str) -> None:
    """Without a credential, rotate and evict are 401 with a Bearer challenge."""
    response = await api.client.request(method, f"/v1/realms/{api.realm.name}/{action}")
    problem_of(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_rotating_a_realm_without_credentials_is_404(api: Api) -> None:
    """An admin rotating a realm that has no secret in Vault gets 404."""
    response = await api.client.post(
        "/v1/realms/no-such-realm-anywhere/rotate", headers=bearer(api.keys.admin)
    )
    assert "realm-not-found" == slug(problem_of(response, 404))


@pytest.mark.parametrize(("method", "action"), [("POST", "rotate"), ("DELETE", "token")])
async def test_admin_operations_on_a_malformed_realm_are_422(
    api: Api, method: str, action: str
) -> None:
    """A malformed realm name in an admin operation is 422."""
    response = await api.client.request(
        method, f"/v1/realms/bad%20realm/{action}", headers=bearer(api.keys.admin)
    )
    assert "invalid-request" == slug(problem_of(response, 422))
