"""`GET /v1/realms/{realm}/token` in process: the token, who may have it, and the
caller-side refusals (401, 403, 404, 422, 429)."""

from __future__ import annotations

import pytest

from inprocess import Api, bearer, problem_of, slug


async def test_allowed_caller_gets_a_token(api: Api) -> None:
    """An allowed caller gets the realm's token with its lifetime, uncached by proxies."""
    response = await api.token(api.realm.name, api.keys.everything)
    assert 200 == response.status_code, response.text
    body = response.json()
    assert ("Bearer", api.realm.name) == (body["token_type"], body["realm"])
    assert 60 < body["expires_in"] <= 3600
    assert "no-store" == response.headers["cache-control"]


async def test_workload_caller_gets_a_token(api: Api) -> None:
    """A workload JWT from a policy issuer, whose subject is a caller, gets the token."""
    jwt = api.issuer.token(api.keys.workload_subject)
    response = await api.client.get(f"/v1/realms/{api.realm.name}/token", headers=bearer(jwt))
    api.stack.served_tokens(response)
    assert 200 == response.status_code, response.text


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer not-a-key-of-anyone"},
        {"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."},
    ],
    ids=["none", "basic", "empty", "unknown-key", "unsigned-jwt"],
)
async def test_missing_or_unknown_credential_is_401_with_a_bearer_challenge(
    api: Api, headers: dict[str, str]
) -> None:
    """No credential, another scheme, an unknown key or a bad JWT: 401 naming Bearer."""
    response = await api.client.get(f"/v1/realms/{api.realm.name}/token", headers=headers)
    assert "unauthenticated" == slug(problem_of(response, 401))
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_caller_not_allowed_the_realm_is_403(api: Api) -> None:
    """A caller asking for a realm its policy does not list gets 403."""
    response = await api.token(api.realm.name, api.keys.limited)
    assert "forbidden" == slug(problem_of(response, 403))


async def test_authorization_comes_before_the_realm_exists(api: Api) -> None:
    """A realm without credentials is 403, not 404, for a caller not allowed it."""
    response = await api.token("no-such-realm-anywhere", api.keys.limited)
    assert "forbidden" == slug(problem_of(response, 403))


async def test_limited_caller_gets_its_own_realm(api: Api) -> None:
    """The limited caller's one realm is served to it."""
    response = await api.token(api.limited_realm.name, api.keys.limited)
    assert 200 == response.status_code, response.text


async def test_realm_without_credentials_is_404_for_an_allowed_caller(api: Api) -> None:
    """An allowed caller naming a realm that has no secret in Vault gets 404."""
    response = await api.token("no-such-realm-anywhere", api.keys.everything)
    assert "realm-not-found" == slug(problem_of(response, 404))


@pytest.mark.parametrize("realm", ["a%20b", "a" * 65, "-dash", ".dot", "%C3%A9t%C3%A9", "x%3By"])
async def test_malformed_realm_name_is_422(api: Api, realm: str) -> None:
    """A realm name outside ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ is 422, naming the realm."""
    response = await api.token(realm, api.keys.everything)
    body = problem_of(response, 422)
    assert ("invalid-request", True) == (slug(body), "realm" in body["detail"])


@pytest.mark.parametrize("min_ttl", ["abc", "-1", "86401", "1.5", ""])
async def test_malformed_min_ttl_is_422(api: Api, min_ttl: str) -> None:
    """A min_ttl that is not an integer 0..86400 is 422, naming min_ttl."""
    response = await api.token(api.realm.name, api.keys.everything, min_ttl=min_ttl)
    body = problem_of(response, 422)
    assert ("invalid-request", True) == (slug(body), "min_ttl" in body["detail"])


async def test_min_ttl_beyond_the_realms_tokens_is_422(api: Api) -> None:
    """A min_ttl longer than the realm's tokens live (an hour) is 422 min-ttl-unsatisfiable."""
    response = await api.token(api.realm.name, api.keys.everything, min_ttl=86400)
    assert "min-ttl-unsatisfiable" == slug(problem_of(response, 422))


async def test_authentication_comes_before_input_validation(api: Api) -> None:
    """Without a credential even a malformed request learns only that it is a 401."""
    response = await api.client.get("/v1/realms/a%20b/token", params={"min_ttl": "x"})
    problem_of(response, 401)


async def test_caller_over_its_rate_limit_is_429_with_retry_after(api: Api) -> None:
    """A caller with a burst of one is refused its second request with 429 and Retry-After."""
    responses = [await api.token(api.realm.name, api.keys.throttled) for _ in range(2)]
    refused = responses[-1]
    assert "rate-limited" == slug(problem_of(refused, 429))
    assert int(refused.headers["retry-after"]) >= 1
