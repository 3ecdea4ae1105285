"""`KeycloakTokenIssuer` with the realm options of real IdPs, against an IdP played by
`httpx.MockTransport`: opaque tokens, verify modes, discovery and client_secret_post."""

from __future__ import annotations

import dataclasses
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from pydantic import SecretStr

from broker.adapters.keycloak import KeycloakTokenIssuer
from broker.adapters.vault import _credentials
from broker.core.errors import CredentialsInvalid, IdPBadResponse, IdPOriginNotAllowed
from broker.core.models import RealmCredentials
from fakes import FakeClock, realm_credentials

IDP = "https://idp.test"
BASE = f"{IDP}/auth/realms/acme"
CREDENTIALS = realm_credentials("acme", version=1)
SECRET = CREDENTIALS.client_secret.get_secret_value()
NOW = float(int(time.time()))
OPAQUE = "1CP9xR6tqpRHzaZxWcFAp3GtkFcXEQ"


@dataclass
class IdP:
    """Serves a token answer at any token path and, when set, a discovery document."""

    access_token: str = OPAQUE
    discovery: dict[str, Any] | None = None
    discovery_status: int = 200
    posts: list[httpx.Request] = field(default_factory=list)
    discovery_reads: int = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/.well-known/openid-configuration"):
            self.discovery_reads += 1
            if self.discovery is None:
                return httpx.Response(404)
            return httpx.Response(self.discovery_status, json=self.discovery)
        self.posts.append(request)
        body = {"access_token": self.access_token, "token_type": "Bearer", "expires_in": 600}
        return httpx.Response(200, json=body)


@dataclass
class Rig:
    idp: IdP
    issuer: KeycloakTokenIssuer
    clock: FakeClock


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    idp, clock = IdP(), FakeClock(NOW)
    client = httpx.AsyncClient(transport=httpx.MockTransport(idp))
    yield Rig(idp, KeycloakTokenIssuer(client=client, idp_url=IDP, clock=clock), clock)
    await client.aclose()


def with_options(**options: Any) -> RealmCredentials:
    return dataclasses.replace(CREDENTIALS, **options)


def unsigned_jwt() -> str:
    return jwt.encode({"iss": BASE, "exp": int(NOW) + 3600}, "k" * 32, algorithm="HS256")


def document(**members: str) -> dict[str, Any]:
    return {
        "issuer": BASE,
        "token_endpoint": f"{IDP}/oauth2/token",
        "jwks_uri": f"{IDP}/oauth2/keys",
        **members,
    }


# --- opaque tokens and verify modes --------------------------------------------------------


async def test_opaque_token_lives_expires_in_from_the_moment_sent(rig: Rig) -> None:
    """An opaque token is accepted in auto mode and dies expires_in after the request left."""
    token = await rig.issuer.fetch(CREDENTIALS)

    assert (token.value, token.issued_at, token.expires_at) == (OPAQUE, NOW, NOW + 600)


async def test_opaque_token_is_refused_when_verify_is_jwks(rig: Rig) -> None:
    """With verify jwks an opaque token is a bad IdP answer."""
    with pytest.raises(IdPBadResponse, match="not a JWT"):
        await rig.issuer.fetch(with_options(verify="jwks"))


async def test_jwt_failing_verification_is_refused_in_auto_mode(rig: Rig) -> None:
    """In auto mode a JWT must verify: one signed with a shared secret is refused."""
    rig.idp.access_token = unsigned_jwt()

    with pytest.raises(IdPBadResponse, match="refused"):
        await rig.issuer.fetch(CREDENTIALS)


async def test_verify_none_accepts_an_unverifiable_jwt_with_its_exp(rig: Rig) -> None:
    """With verify none a JWT is not verified, but its exp still bounds its life."""
    rig.idp.access_token = unsigned_jwt()

    token = await rig.issuer.fetch(with_options(verify="none"))

    assert token.expires_at == NOW + 600  # expires_in is earlier than exp


# --- client authentication ---------------------------------------------------------------


async def test_client_secret_post_puts_id_and_secret_in_the_form(rig: Rig) -> None:
    """auth_method client_secret_post sends the id and secret in the form, no Basic header."""
    await rig.issuer.fetch(with_options(auth_method="client_secret_post"))

    [request] = rig.idp.posts
    form = urllib.parse.parse_qs(request.content.decode())
    assert (form["client_id"], form["client_secret"], "authorization" in request.headers) == (
        [CREDENTIALS.client_id],
        [SECRET],
        False,
    )


# --- discovery -----------------------------------------------------------------------------


async def test_discovered_token_endpoint_is_used(rig: Rig) -> None:
    """The token request goes to the discovery document's token_endpoint."""
    rig.idp.discovery = document()

    await rig.issuer.fetch(CREDENTIALS)

    assert str(rig.idp.posts[0].url) == f"{IDP}/oauth2/token"


async def test_keycloak_path_is_used_without_a_discovery_document(rig: Rig) -> None:
    """Without a discovery document the token request goes to Keycloak's path."""
    await rig.issuer.fetch(CREDENTIALS)

    assert str(rig.idp.posts[0].url) == f"{BASE}/protocol/openid-connect/token"


async def test_foreign_token_endpoint_in_discovery_is_refused_with_nothing_sent(rig: Rig) -> None:
    """A discovery document naming a token endpoint at another origin is refused, no POST."""
    rig.idp.discovery = document(token_endpoint="https://evil.test/token")

    with pytest.raises(IdPOriginNotAllowed):
        await rig.issuer.fetch(CREDENTIALS)

    assert rig.idp.posts == []


async def test_foreign_jwks_uri_in_discovery_is_refused_with_nothing_sent(rig: Rig) -> None:
    """A discovery document naming a JWKS at another origin is refused before the grant."""
    rig.idp.discovery = document(jwks_uri="https://evil.test/keys")

    with pytest.raises(IdPOriginNotAllowed):
        await rig.issuer.fetch(CREDENTIALS)

    assert rig.idp.posts == []


async def test_discovery_is_read_once_within_the_hour(rig: Rig) -> None:
    """A second fetch within the hour reuses the cached document."""
    rig.idp.discovery = document()

    await rig.issuer.fetch(CREDENTIALS)
    rig.clock.advance(3000)
    await rig.issuer.fetch(CREDENTIALS)

    assert rig.idp.discovery_reads == 1


async def test_failed_discovery_refresh_keeps_the_last_good_copy(rig: Rig) -> None:
    """After the hour a failing read keeps the last good document in use."""
    rig.idp.discovery = document()
    await rig.issuer.fetch(CREDENTIALS)
    rig.clock.advance(3700)
    rig.idp.discovery_status = 503

    await rig.issuer.fetch(CREDENTIALS)

    assert [str(r.url) for r in rig.idp.posts] == [f"{IDP}/oauth2/token"] * 2


async def test_realm_path_gives_the_keycloak17_layout() -> None:
    """With realm path /realms/{realm} the fallback token URL has no /auth."""
    idp = IdP()
    async with httpx.AsyncClient(transport=httpx.MockTransport(idp)) as client:
        issuer = KeycloakTokenIssuer(
            client=client, idp_url=IDP, clock=FakeClock(NOW), realm_path="/realms/{realm}"
        )
        await issuer.fetch(CREDENTIALS)

    assert str(idp.posts[0].url) == f"{IDP}/realms/acme/protocol/openid-connect/token"


# --- the secret's fields -------------------------------------------------------------------


def vault_answer(**data: str) -> dict[str, Any]:
    secret = {"client_id": "atlas-acme", "client_secret": "s3cret-value", **data}
    return {"data": {"data": secret, "metadata": {"version": 1}}}


def test_secret_fields_become_realm_options() -> None:
    """verify, auth_method and issuer in the realm's secret reach its credentials."""
    credentials = _credentials(
        "acme",
        vault_answer(verify="none", auth_method="client_secret_post", issuer="https://sso.test/r"),
    )

    assert (credentials.verify, credentials.auth_method, credentials.issuer) == (
        "none",
        "client_secret_post",
        "https://sso.test/r",
    )


def test_secret_without_verify_takes_the_default() -> None:
    """A secret naming no verify mode gets the configured default."""
    assert _credentials("acme", vault_answer(), default_verify="jwks").verify == "jwks"


def test_unknown_verify_mode_is_refused_without_echoing_it() -> None:
    """A verify value outside auto/jwks/none makes the credentials invalid, value unsaid."""
    with pytest.raises(CredentialsInvalid) as caught:
        _credentials("acme", vault_answer(verify="s3cret-pasted-here"))

    assert "s3cret-pasted-here" not in str(caught.value)


def test_secret_repr_is_unchanged_by_new_fields() -> None:
    """The new fields leave the secret out of the credentials' repr."""
    credentials = with_options(client_secret=SecretStr("hunter2"), verify="none")

    assert "hunter2" not in repr(credentials)
