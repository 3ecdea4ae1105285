"""The drop-in OAuth2 token endpoint and its discovery document in process: the IdP's
answer for a good request, and an RFC 6749 §5.2 error for every refusal."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

from atlas_broker_dev.processes import free_port
from inprocess import Api, in_process, settings_for

FORM = "application/x-www-form-urlencoded"
GRANT = {"grant_type": "client_credentials"}


def token_path(realm: str) -> str:
    return f"/auth/realms/{realm}/protocol/openid-connect/token"


def basic(name: str, key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{key}".encode()).decode()}


async def ask(
    api: Api,
    realm: str,
    *,
    form: dict[str, str] | None = None,
    auth: tuple[str, str] | None = ("api-all", ""),
    content: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST to the realm's token endpoint, by default as the caller allowed everything."""
    sent = dict(headers or {})
    if auth is not None:
        sent.update(basic(auth[0], auth[1] or api.keys.everything))
    if content is not None:
        response = await api.client.post(
            token_path(realm), content=content, headers={"Content-Type": FORM, **sent}
        )
    else:
        response = await api.client.post(token_path(realm), data=form or GRANT, headers=sent)
    if response.status_code == 200:
        api.stack.leak_watch.add(response.json()["access_token"])
    return response


def oauth_error(response: httpx.Response, status: int) -> str:
    """The RFC 6749 error code of `response`, which must have `status` and not be cached."""
    assert status == response.status_code, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "no-store" == response.headers["cache-control"]
    body: dict[str, Any] = response.json()
    assert {"error", "error_description"} == set(body)
    error: str = body["error"]
    return error


async def test_basic_credentials_get_the_idps_answer(api: Api) -> None:
    """client_secret_basic: a Bearer token with its lifetime, as the IdP answers."""
    response = await ask(api, api.realm.name)
    assert 200 == response.status_code, response.text
    body = response.json()
    assert ("Bearer", True) == (body["token_type"], 60 < body["expires_in"] <= 3600)
    assert "no-store" == response.headers["cache-control"]


async def test_form_credentials_get_a_token(api: Api) -> None:
    """client_secret_post: the caller's name and key as form fields also get a token."""
    form = {**GRANT, "client_id": "api-all", "client_secret": api.keys.everything}
    response = await ask(api, api.realm.name, form=form, auth=None)
    assert 200 == response.status_code, response.text


@pytest.mark.parametrize(
    "auth", [None, ("api-all", "wrong-key"), ("api-limited", "")], ids=["none", "key", "name"]
)
async def test_unknown_client_is_401_invalid_client_with_a_basic_challenge(
    api: Api, auth: tuple[str, str] | None
) -> None:
    """No credentials, a wrong key or a key under another caller's name: invalid_client."""
    response = await ask(api, api.realm.name, auth=auth)
    assert "invalid_client" == oauth_error(response, 401)
    assert response.headers["www-authenticate"].startswith("Basic")


async def test_malformed_basic_credentials_are_invalid_client(api: Api) -> None:
    """A Basic header that is not base64 of name:key is invalid_client."""
    response = await ask(
        api, api.realm.name, auth=None, headers={"Authorization": "Basic %%%not-base64"}
    )
    assert "invalid_client" == oauth_error(response, 401)


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        ("", FORM),
        ("grant_type=client_credentials&grant_type=client_credentials", FORM),
        ('{"grant_type": "client_credentials"}', "application/json"),
        ("grant_type=client_credentials&min_ttl=abc", FORM),
        ("grant_type=client_credentials&x=" + "a" * 17_000, FORM),
    ],
    ids=["no-grant", "duplicated", "json", "min-ttl", "too-large"],
)
async def test_malformed_request_is_400_invalid_request(
    api: Api, content: str, content_type: str
) -> None:
    """No grant_type, a repeated parameter, a body that is not a form, a bad min_ttl or
    an oversized body: invalid_request."""
    response = await api.client.post(
        token_path(api.realm.name),
        content=content,
        headers={**basic("api-all", api.keys.everything), "Content-Type": content_type},
    )
    assert "invalid_request" == oauth_error(response, 400)


async def test_both_client_authentication_methods_is_invalid_request(api: Api) -> None:
    """Basic credentials and a client_secret form field together: invalid_request."""
    form = {**GRANT, "client_secret": api.keys.everything}
    response = await ask(api, api.realm.name, form=form)
    assert "invalid_request" == oauth_error(response, 400)


async def test_other_grant_is_unsupported_grant_type(api: Api) -> None:
    """Any grant but client_credentials is unsupported_grant_type."""
    response = await ask(api, api.realm.name, form={"grant_type": "password"})
    assert "unsupported_grant_type" == oauth_error(response, 400)


async def test_malformed_realm_is_invalid_request(api: Api) -> None:
    """A realm name outside the pattern is invalid_request, not a problem document."""
    response = await ask(api, "bad%20realm")
    assert "invalid_request" == oauth_error(response, 400)


async def test_realm_without_credentials_is_invalid_request(api: Api) -> None:
    """An allowed caller naming a realm without a secret in Vault gets invalid_request."""
    response = await ask(api, "no-such-realm-anywhere")
    assert "invalid_request" == oauth_error(response, 400)


async def test_realm_not_allowed_is_unauthorized_client(api: Api) -> None:
    """A caller naming a realm its policy does not list gets unauthorized_client."""
    response = await ask(api, api.realm.name, auth=("api-limited", api.keys.limited))
    assert "unauthorized_client" == oauth_error(response, 400)


async def test_caller_over_its_rate_limit_is_temporarily_unavailable(api: Api) -> None:
    """Past its burst a caller gets 429 temporarily_unavailable with Retry-After.

    Three requests: on a slow run the caller's allowance (one request per 100 s, used by
    an earlier test of the module) may refill between the first two."""
    auth = ("api-throttled", api.keys.throttled)
    responses = [await ask(api, api.realm.name, auth=auth) for _ in range(3)]
    assert "temporarily_unavailable" == oauth_error(responses[-1], 429)
    assert int(responses[-1].headers["retry-after"]) >= 1


async def test_idp_refusing_the_realm_is_502_server_error(api: Api) -> None:
    """A realm whose credentials the IdP refuses is 502 server_error."""
    realm = api.stack.new_realm("api-dropin-rejected", in_vault=False)
    api.stack.openbao.write_realm(
        realm.name, {"client_id": realm.client_id, "client_secret": secrets.token_urlsafe(16)}
    )
    assert "server_error" == oauth_error(await ask(api, realm.name), 502)


async def test_idp_unreachable_is_503_temporarily_unavailable(api: Api, policy_file: Path) -> None:
    """An IdP that cannot be reached, nothing cached: 503 with Retry-After."""
    settings = settings_for(api.stack, policy_file, idp_url=f"http://127.0.0.1:{free_port()}")
    async with in_process(settings) as client:
        response = await client.post(
            token_path(api.realm.name), data=GRANT, headers=basic("api-all", api.keys.everything)
        )
    assert "temporarily_unavailable" == oauth_error(response, 503)
    assert int(response.headers["retry-after"]) >= 1


async def test_discovery_points_clients_at_the_broker(api: Api) -> None:
    """The discovery document names the broker's own token endpoint for the realm."""
    response = await api.client.get("/auth/realms/acme/.well-known/openid-configuration")
    body = response.json()
    assert (
        "http://broker.test/auth/realms/acme/protocol/openid-connect/token"
        == (body["token_endpoint"])
    )
    assert ["client_credentials"] == body["grant_types_supported"]


async def test_discovery_for_a_malformed_realm_is_invalid_request(api: Api) -> None:
    """The discovery document of a malformed realm name is a 400 invalid_request."""
    response = await api.client.get("/auth/realms/bad%20realm/.well-known/openid-configuration")
    assert 400 == response.status_code
    assert "invalid_request" == response.json()["error"]
