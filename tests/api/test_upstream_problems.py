"""The 5xx problems of the token route, in process: what a failing IdP or Vault becomes
(502 for an answer that is wrong, 503 with Retry-After for one that does not come)."""

from __future__ import annotations

import secrets
from pathlib import Path

from broker.devstack.processes import free_port
from inprocess import Api, bearer, in_process, problem_of, settings_for, slug


async def test_idp_refusing_the_credentials_is_502(api: Api) -> None:
    """A realm whose secret in Vault the IdP does not accept is 502 idp-rejected."""
    realm = api.stack.new_realm("api-rejected", in_vault=False)
    api.stack.openbao.write_realm(
        realm.name, {"client_id": realm.client_id, "client_secret": secrets.token_urlsafe(16)}
    )
    response = await api.token(realm.name, api.keys.everything)
    assert "idp-rejected" == slug(problem_of(response, 502))


async def test_idp_answering_junk_is_502(api: Api) -> None:
    """An IdP answer that is not a token response is 502 idp-bad-response."""
    realm = api.stack.new_realm("api-junk")
    api.stack.set_fault(realm.name, "garbage")
    response = await api.token(realm.name, api.keys.everything)
    assert "idp-bad-response" == slug(problem_of(response, 502))


async def test_incomplete_realm_secret_is_502(api: Api) -> None:
    """A realm secret without client_secret is 502 realm-credentials-invalid."""
    realm = api.stack.new_realm("api-incomplete", in_vault=False)
    api.stack.openbao.write_realm(realm.name, {"client_id": realm.client_id})
    response = await api.token(realm.name, api.keys.everything)
    assert "realm-credentials-invalid" == slug(problem_of(response, 502))


async def test_idp_unreachable_with_nothing_cached_is_503_with_retry_after(
    api: Api, policy_file: Path
) -> None:
    """An IdP that cannot be reached, no token cached: 503 idp-unavailable, Retry-After."""
    settings = settings_for(api.stack, policy_file, idp_url=f"http://127.0.0.1:{free_port()}")
    async with in_process(settings) as client:
        response = await client.get(
            f"/v1/realms/{api.realm.name}/token", headers=bearer(api.keys.everything)
        )
    assert "idp-unavailable" == slug(problem_of(response, 503))
    assert int(response.headers["retry-after"]) >= 1


async def test_vault_unreachable_is_503_and_not_ready(api: Api, policy_file: Path) -> None:
    """With Vault unreachable and nothing loaded, a token request is 503 with Retry-After,
    and /readyz answers 503 naming Vault as failing."""
    settings = settings_for(api.stack, policy_file, vault_addr=f"http://127.0.0.1:{free_port()}")
    async with in_process(settings) as client:
        response = await client.get(
            f"/v1/realms/{api.realm.name}/token",
            headers=bearer(api.keys.everything),
        )
        ready = await client.get("/readyz")
    assert "secret-source-unavailable" == slug(problem_of(response, 503))
    assert int(response.headers["retry-after"]) >= 1
    assert (503, "not_ready") == (ready.status_code, ready.json()["status"])
    assert "ok" != ready.json()["checks"]["vault"]
