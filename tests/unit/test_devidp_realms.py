"""The development IdP's realm options: opaque tokens, the Keycloak 17 layout, discovery
on or off, and the client authentications a realm accepts."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import jwt
import pytest

from atlas_broker_dev.idp import DevClient, IdPConfig, create_idp_app

BASE_URL = "http://idp.test"
GRANT = {"grant_type": "client_credentials"}


def basic() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(b"c:s").decode()}


def idp_with(**options: Any) -> httpx.AsyncClient:
    """A fresh IdP whose realm acme has client c (secret s) and the given options."""
    config = IdPConfig.from_dict(
        {"realms": {"acme": {"clients": [{"client_id": "c", "client_secret": "s"}], **options}}}
    )
    transport = httpx.ASGITransport(app=create_idp_app(config))
    return httpx.AsyncClient(transport=transport, base_url=BASE_URL)


async def test_opaque_realm_issues_a_token_that_is_not_a_jwt() -> None:
    """An opaque realm's access_token is no JWT, with expires_in as usual."""
    async with idp_with(token_format="opaque") as idp:
        body = (
            await idp.post(
                "/auth/realms/acme/protocol/openid-connect/token", data=GRANT, headers=basic()
            )
        ).json()

    with pytest.raises(jwt.DecodeError):
        jwt.get_unverified_header(body["access_token"])
    assert body["expires_in"] == 3600


async def test_keycloak17_realm_lives_under_realms_only() -> None:
    """A realm with path /realms answers there, with that issuer, and 404 under /auth."""
    async with idp_with(path="/realms") as idp:
        new = await idp.post(
            "/realms/acme/protocol/openid-connect/token", data=GRANT, headers=basic()
        )
        old = await idp.post(
            "/auth/realms/acme/protocol/openid-connect/token", data=GRANT, headers=basic()
        )

    claims = jwt.decode(new.json()["access_token"], options={"verify_signature": False})
    assert (claims["iss"], old.status_code) == (f"{BASE_URL}/realms/acme", 404)


async def test_discovery_can_be_switched_off() -> None:
    """A realm with discovery false has no openid-configuration document."""
    async with idp_with(discovery=False) as idp:
        response = await idp.get("/auth/realms/acme/.well-known/openid-configuration")

    assert response.status_code == 404


async def test_discovery_overrides_replace_members() -> None:
    """discovery_overrides replace members of the served document."""
    foreign = "http://elsewhere.test/token"
    async with idp_with(discovery_overrides={"token_endpoint": foreign}) as idp:
        document = (await idp.get("/auth/realms/acme/.well-known/openid-configuration")).json()

    assert (document["token_endpoint"], document["issuer"]) == (
        foreign,
        f"{BASE_URL}/auth/realms/acme",
    )


async def test_post_only_realm_refuses_basic_and_accepts_the_form() -> None:
    """A realm accepting only client_secret_post refuses Basic and takes the secret in the form."""
    url = "/auth/realms/acme/protocol/openid-connect/token"
    async with idp_with(auth_methods=["client_secret_post"]) as idp:
        refused = await idp.post(url, data=GRANT, headers=basic())
        taken = await idp.post(url, data={**GRANT, "client_id": "c", "client_secret": "s"})

    assert (refused.json()["error"], taken.status_code) == ("unauthorized_client", 200)


async def test_control_endpoint_sets_realm_options() -> None:
    """PUT /_dev/realms/{realm} creates a realm with its options."""
    config = IdPConfig(clients={"acme": [DevClient("c", "s")]})
    transport = httpx.ASGITransport(app=create_idp_app(config))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as idp:
        put = await idp.put("/_dev/realms/acme", json={"path": "/realms", "discovery": False})
        document = await idp.get("/realms/acme/.well-known/openid-configuration")
        token = await idp.post(
            "/realms/acme/protocol/openid-connect/token", data=GRANT, headers=basic()
        )

    assert (put.status_code, document.status_code, token.status_code) == (200, 404, 200)


def test_unknown_realm_path_is_refused() -> None:
    """A realm path other than the two Keycloak layouts is a configuration error."""
    with pytest.raises(ValueError, match="path must be one of"):
        IdPConfig.from_dict({"realms": {"acme": {"path": "/x"}}})


async def test_fixed_issuer_names_tokens_and_discovery_but_not_endpoints() -> None:
    """A realm's fixed issuer goes into iss and the document; endpoints stay where reached."""
    async with idp_with(issuer="https://sso.example.test/auth/realms/acme") as idp:
        document = (await idp.get("/auth/realms/acme/.well-known/openid-configuration")).json()
        body = (
            await idp.post(
                "/auth/realms/acme/protocol/openid-connect/token", data=GRANT, headers=basic()
            )
        ).json()

    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert (claims["iss"], document["issuer"], document["token_endpoint"]) == (
        "https://sso.example.test/auth/realms/acme",
        "https://sso.example.test/auth/realms/acme",
        f"{BASE_URL}/auth/realms/acme/protocol/openid-connect/token",
    )
