"""`KeycloakTokenIssuer` against an IdP played by `httpx.MockTransport`: the request it
sends, the token it accepts, and how every bad answer maps to the broker's errors."""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from broker.adapters.keycloak import KeycloakTokenIssuer
from broker.core.errors import (
    BrokerError,
    IdPBadResponse,
    IdPOriginNotAllowed,
    IdPRejected,
    IdPUnavailable,
)
from broker.core.models import RealmCredentials
from fakes import FakeClock, realm_credentials

IDP = "https://idp.test"
REALM_BASE = f"{IDP}/auth/realms/acme"
TOKEN_URL = f"{REALM_BASE}/protocol/openid-connect/token"
CREDENTIALS = realm_credentials("acme", version=3)
SECRET = CREDENTIALS.client_secret.get_secret_value()
BASIC = base64.b64encode(f"{CREDENTIALS.client_id}:{SECRET}".encode()).decode()
KID = "realm-key-1"
# The adapter checks signatures with PyJWT, which compares `iat` with the wall clock; the
# fake clock therefore starts at the real time, so test tokens are never "from the future".
NOW = float(int(time.time()))

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks(signing_key: rsa.RSAPrivateKey) -> dict[str, Any]:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key()))
    return {"keys": [{**public, "kid": KID, "alg": "RS256", "use": "sig"}]}


@dataclass
class FakeIdP:
    """Answers token requests with `answer` and publishes the realm's JWKS."""

    jwks: dict[str, Any]
    answer: Handler
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/protocol/openid-connect/certs"):
            return httpx.Response(200, json=self.jwks)
        if request.url.path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(404, json={"error": "Realm does not exist"})
        self.requests.append(request)
        return self.answer(request)


class Signer:
    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self._key = key

    def jwt(self, *, issuer: str = REALM_BASE, kid: str = KID, **claims: Any) -> str:
        body = {"iss": issuer, "iat": int(NOW), "exp": int(NOW) + 3600, **claims}
        body = {name: value for name, value in body.items() if value is not None}
        return jwt.encode(body, self._key, algorithm="RS256", headers={"kid": kid})

    def answer(self, *, status: int = 200, **fields: Any) -> Handler:
        """A token endpoint answering `fields` (defaults: a good Bearer response)."""
        body = {
            "access_token": self.jwt(),
            "token_type": "Bearer",
            "expires_in": 3600,
            **fields,
        }
        body = {name: value for name, value in body.items() if value is not None}
        return lambda request: httpx.Response(status, json=body)


@pytest.fixture
def signer(signing_key: rsa.RSAPrivateKey) -> Signer:
    return Signer(signing_key)


@dataclass
class Rig:
    idp: FakeIdP
    issuer: KeycloakTokenIssuer
    clock: FakeClock

    async def fetch(self, credentials: RealmCredentials = CREDENTIALS) -> Any:
        return await self.issuer.fetch(credentials)

    async def error(self, credentials: RealmCredentials = CREDENTIALS) -> BrokerError:
        with pytest.raises(BrokerError) as caught:
            await self.issuer.fetch(credentials)
        return caught.value


@pytest.fixture
async def rig(jwks: dict[str, Any], signer: Signer) -> AsyncIterator[Rig]:
    idp = FakeIdP(jwks, signer.answer())
    clock = FakeClock(NOW)
    client = httpx.AsyncClient(transport=httpx.MockTransport(idp))
    yield Rig(idp, KeycloakTokenIssuer(client=client, idp_url=IDP, clock=clock), clock)
    await client.aclose()


def form(request: httpx.Request) -> dict[str, list[str]]:
    return urllib.parse.parse_qs(request.content.decode())


def leaks_secret(exc: BaseException) -> bool:
    text = f"{exc} {exc!r}"
    return SECRET in text or BASIC in text


# --- the request -------------------------------------------------------------------------


async def test_request_posts_to_the_realm_token_endpoint(rig: Rig) -> None:
    """The grant is a POST to {idp}/auth/realms/{realm}/protocol/openid-connect/token."""
    await rig.fetch()

    [request] = rig.idp.requests
    assert ("POST", TOKEN_URL) == (request.method, str(request.url))


async def test_request_authenticates_with_basic_id_and_secret(rig: Rig) -> None:
    """The client authenticates with Authorization: Basic base64(id:secret)."""
    await rig.fetch()

    assert f"Basic {BASIC}" == rig.idp.requests[0].headers["authorization"]


async def test_request_body_is_the_client_credentials_grant(rig: Rig) -> None:
    """The form body is exactly grant_type=client_credentials, form-encoded."""
    await rig.fetch()

    [request] = rig.idp.requests
    assert (
        "application/x-www-form-urlencoded",
        {"grant_type": ["client_credentials"]},
    ) == (request.headers["content-type"], form(request))


async def test_request_sends_the_realms_scope(rig: Rig) -> None:
    """A realm configured with a scope asks for it in the form body."""
    await rig.fetch(realm_credentials("acme", scope="atlas.read atlas.write"))

    assert {"grant_type": ["client_credentials"], "scope": ["atlas.read atlas.write"]} == form(
        rig.idp.requests[0]
    )


async def test_request_never_puts_the_secret_in_the_url_or_body(rig: Rig) -> None:
    """The secret travels only in the Authorization header."""
    await rig.fetch()

    [request] = rig.idp.requests
    assert (False, False) == (SECRET in str(request.url), SECRET in request.content.decode())


async def test_token_url_from_the_credentials_overrides_the_idp_url(
    jwks: dict[str, Any], signer: Signer
) -> None:
    """A realm whose secret names a token_url at an allowed origin is asked there, not
    under BROKER_IDP_URL."""
    custom_base = "https://sso.partner.test/auth/realms/acme-eu"
    custom_url = f"{custom_base}/protocol/openid-connect/token"
    idp = FakeIdP(
        jwks,
        lambda request: httpx.Response(
            200,
            json={
                "access_token": signer.jwt(issuer=custom_base),
                "token_type": "Bearer",
                "expires_in": 3600,
            },
        ),
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(idp)) as client:
        issuer = KeycloakTokenIssuer(
            client=client,
            idp_url=IDP,
            clock=FakeClock(NOW),
            allowed_origins=["https://sso.partner.test"],
        )
        await issuer.fetch(realm_credentials("acme", token_url=custom_url))

    assert [custom_url] == [str(request.url) for request in idp.requests]


async def test_token_url_outside_the_allowed_origins_is_never_asked() -> None:
    """A token_url whose origin is neither BROKER_IDP_URL's nor listed raises
    IdPOriginNotAllowed before any request is made."""
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as client:
        issuer = KeycloakTokenIssuer(client=client, idp_url=IDP, clock=FakeClock(NOW))
        with pytest.raises(IdPOriginNotAllowed):
            await issuer.fetch(
                realm_credentials("acme", token_url="https://idp.test:8443/auth/realms/acme")
            )

    assert [] == sent


async def test_realm_without_any_token_url_is_a_bad_configuration() -> None:
    """Without BROKER_IDP_URL and without a token_url, no request is made."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(500))) as c:
        issuer = KeycloakTokenIssuer(client=c, idp_url=None, clock=FakeClock())
        with pytest.raises(IdPBadResponse):
            await issuer.fetch(CREDENTIALS)


# --- a good answer -----------------------------------------------------------------------


async def test_good_answer_gives_the_access_token(rig: Rig, signer: Signer) -> None:
    """A valid answer yields its access_token, stamped with the credential version used."""
    value = signer.jwt(jti="one")
    rig.idp.answer = signer.answer(access_token=value)

    token = await rig.fetch()

    assert (value, NOW, 3) == (token.value, token.issued_at, token.credential_version)


@pytest.mark.parametrize(
    ("exp_in", "expires_in", "lives"),
    [(3600, 300, 300), (100, 3600, 100), (3600, 3600, 3600)],
)
async def test_expiry_is_the_earlier_of_exp_and_expires_in(
    rig: Rig, signer: Signer, exp_in: int, expires_in: int, lives: int
) -> None:
    """expires_at is min(JWT exp, now + expires_in)."""
    rig.idp.answer = signer.answer(
        access_token=signer.jwt(exp=int(NOW) + exp_in), expires_in=expires_in
    )

    token = await rig.fetch()

    assert NOW + lives == token.expires_at


async def test_token_type_is_case_insensitive(rig: Rig, signer: Signer) -> None:
    """token_type "bearer" is as good as "Bearer" (RFC 6749 §5.1)."""
    rig.idp.answer = signer.answer(token_type="bearer")

    assert (await rig.fetch()).value


# --- bad answers -------------------------------------------------------------------------


def raw(status: int, body: str, content_type: str = "application/json") -> Handler:
    return lambda request: httpx.Response(
        status, content=body.encode(), headers={"Content-Type": content_type}
    )


BAD_ANSWERS: dict[str, tuple[Callable[[Signer], Handler], type[BrokerError]]] = {
    "html page": (
        lambda s: raw(200, "<html><body>Login</body></html>", "text/html"),
        IdPBadResponse,
    ),
    "garbage": (lambda s: raw(200, "\x00\xff not json {"), IdPBadResponse),
    "json array": (lambda s: raw(200, '[{"access_token": "x"}]'), IdPBadResponse),
    "json string": (lambda s: raw(200, '"eyJ"'), IdPBadResponse),
    "empty body": (lambda s: raw(200, ""), IdPBadResponse),
    "500": (lambda s: raw(500, "Internal Server Error", "text/plain"), IdPBadResponse),
    "500 with json": (lambda s: raw(500, '{"message": "boom"}'), IdPBadResponse),
    "502": (lambda s: raw(502, "Bad Gateway", "text/plain"), IdPUnavailable),
    "503": (lambda s: raw(503, "Service Unavailable", "text/plain"), IdPUnavailable),
    "504": (lambda s: raw(504, "Gateway Timeout", "text/plain"), IdPUnavailable),
    "missing access_token": (lambda s: s.answer(access_token=None), IdPBadResponse),
    "empty access_token": (lambda s: s.answer(access_token=""), IdPBadResponse),
    "numeric access_token": (lambda s: s.answer(access_token=12345), IdPBadResponse),
    "token_type mac": (lambda s: s.answer(token_type="mac"), IdPBadResponse),
    "missing token_type": (lambda s: s.answer(token_type=None), IdPBadResponse),
    "missing expires_in": (lambda s: s.answer(expires_in=None), IdPBadResponse),
    "negative expires_in": (lambda s: s.answer(expires_in=-5), IdPBadResponse),
    "zero expires_in": (lambda s: s.answer(expires_in=0), IdPBadResponse),
    "string expires_in": (lambda s: s.answer(expires_in="3600"), IdPBadResponse),
    "boolean expires_in": (lambda s: s.answer(expires_in=True), IdPBadResponse),
    "jwt without exp": (lambda s: s.answer(access_token=s.jwt(exp=None)), IdPBadResponse),
    "jwt with text exp": (lambda s: s.answer(access_token=s.jwt(exp="tomorrow")), IdPBadResponse),
    "expired jwt": (
        lambda s: s.answer(access_token=s.jwt(exp=int(NOW) - 60)),
        IdPBadResponse,
    ),
    "jwt from another issuer": (
        lambda s: s.answer(access_token=s.jwt(issuer="https://evil.test/auth/realms/acme")),
        IdPBadResponse,
    ),
    "jwt signed with an unknown key": (
        lambda s: s.answer(access_token=s.jwt(kid="someone-elses-key")),
        IdPBadResponse,
    ),
    "unsigned jwt": (
        lambda s: s.answer(
            access_token=jwt.encode(
                {"iss": REALM_BASE, "exp": int(NOW) + 3600}, "", algorithm="none"
            )
        ),
        IdPBadResponse,
    ),
    "hmac jwt": (
        lambda s: s.answer(
            access_token=jwt.encode(
                {"iss": REALM_BASE, "exp": int(NOW) + 3600},
                "a-shared-secret-of-at-least-32-bytes!",
                algorithm="HS256",
                headers={"kid": KID},
            )
        ),
        IdPBadResponse,
    ),
    "invalid_client echoing the request": (
        lambda s: (
            lambda request: httpx.Response(
                401,
                json={
                    "error": "invalid_client",
                    "error_description": f"bad {request.headers['authorization']} / {SECRET}",
                },
            )
        ),
        IdPRejected,
    ),
    "html error echoing the request": (
        lambda s: (
            lambda request: httpx.Response(
                400, text=f"<pre>{request.headers['authorization']} {SECRET}</pre>"
            )
        ),
        IdPBadResponse,
    ),
}


@pytest.mark.parametrize("case", list(BAD_ANSWERS))
async def test_bad_answer_maps_to_its_error(rig: Rig, signer: Signer, case: str) -> None:
    """Each kind of bad answer raises the broker error that says what went wrong."""
    answer, expected = BAD_ANSWERS[case]
    rig.idp.answer = answer(signer)

    assert expected is type(await rig.error())


@pytest.mark.parametrize("case", list(BAD_ANSWERS))
async def test_bad_answer_error_never_contains_the_secret(
    rig: Rig, signer: Signer, case: str
) -> None:
    """No error message quotes the client secret or the Basic credential, even when the
    IdP echoes them back."""
    rig.idp.answer = BAD_ANSWERS[case][0](signer)

    assert not leaks_secret(await rig.error())


async def test_invalid_client_is_rejected_with_its_reason(rig: Rig) -> None:
    """A 401 {"error": "invalid_client"} is IdPRejected with reason invalid_client."""
    rig.idp.answer = lambda request: httpx.Response(401, json={"error": "invalid_client"})

    error = await rig.error()

    assert (IdPRejected, "invalid_client") == (type(error), getattr(error, "reason", None))


async def test_oauth_error_on_400_is_rejected_with_its_reason(rig: Rig) -> None:
    """A 400 {"error": "unauthorized_client"} is IdPRejected with that reason."""
    rig.idp.answer = lambda request: httpx.Response(400, json={"error": "unauthorized_client"})

    error = await rig.error()

    assert (IdPRejected, "unauthorized_client") == (type(error), getattr(error, "reason", None))


async def test_unknown_oauth_error_is_not_repeated_as_a_reason(rig: Rig) -> None:
    """An error code outside RFC 6749 (here with control characters) becomes
    "unexpected_error", so reasons stay a short known set."""
    rig.idp.answer = lambda request: httpx.Response(401, json={"error": "bad\x1b[31mred"})

    error = await rig.error()

    assert (IdPRejected, "unexpected_error") == (type(error), getattr(error, "reason", None))


def failing_transport(exc: type[httpx.TransportError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc(f"failed sending Authorization: Basic {BASIC}", request=request)

    return handler


@pytest.mark.parametrize(
    "exc", [httpx.ConnectError, httpx.ReadTimeout, httpx.ConnectTimeout, httpx.RemoteProtocolError]
)
async def test_transport_failure_is_unavailable(rig: Rig, exc: type[httpx.TransportError]) -> None:
    """A connection failure or timeout means the IdP is unavailable (503, retry later)."""
    rig.idp.answer = failing_transport(exc)

    assert IdPUnavailable is type(await rig.error())


@pytest.mark.parametrize("exc", [httpx.ConnectError, httpx.ReadTimeout])
async def test_transport_failure_error_never_contains_the_secret(
    rig: Rig, exc: type[httpx.TransportError]
) -> None:
    """A transport error message quoting the request does not reach the broker's error."""
    rig.idp.answer = failing_transport(exc)

    assert not leaks_secret(await rig.error())


async def test_oauth_error_with_a_trailing_newline_is_not_trusted(rig: Rig) -> None:
    """An error code ending in a newline is not taken for invalid_client."""
    rig.idp.answer = lambda request: httpx.Response(401, json={"error": "invalid_client\n"})

    error = await rig.error()

    assert (IdPRejected, "unexpected_error") == (type(error), getattr(error, "reason", None))


async def test_token_from_an_idp_clock_slightly_ahead_is_accepted(rig: Rig, signer: Signer) -> None:
    """A token whose iat is a few seconds in the broker's future (IdP clock ahead) is used."""
    ahead = int(time.time()) + 5
    rig.clock.set(time.time())
    rig.idp.answer = signer.answer(access_token=signer.jwt(iat=ahead, exp=ahead + 3600))

    token = await rig.fetch()

    assert ahead + 3600 >= token.expires_at
