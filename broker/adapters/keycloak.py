"""`KeycloakTokenIssuer`: the client-credentials grant against a Keycloak-style realm.

The request is exactly the one the Atlas documentation gives: `POST
{idp}/auth/realms/{realm}/protocol/openid-connect/token` with `Authorization: Basic
base64(ClientId:ClientSecret)` and the form body `grant_type=client_credentials`.

A realm's own `token_url` (from Vault) is used only at an allowed origin (`origins`):
the secret is never sent, and no JWKS or issuer is taken, anywhere else.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable
from typing import Any

import httpx
import jwt

from broker.adapters.jwks import JwksVerifier, VerificationError
from broker.core import origins, rules
from broker.core.errors import IdPBadResponse, IdPOriginNotAllowed, IdPRejected, IdPUnavailable
from broker.core.models import AccessToken, RealmCredentials
from broker.core.ports import Clock

log = logging.getLogger(__name__)

# Gateway answers mean the IdP is down rather than misbehaving: the caller may retry.
_UNAVAILABLE_STATUSES = {502, 503, 504}
# RFC 6749 §5.2 error codes (and Keycloak's realm error): anything else is reported as
# "unexpected_error", so reasons stay a short, known set in audit records and metrics.
_OAUTH_ERRORS = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "temporarily_unavailable",
        "server_error",
        "access_denied",
    }
)


_TOKEN_SUFFIX = "/protocol/openid-connect/token"


def token_url(idp_url: str, realm: str) -> str:
    return f"{idp_url.rstrip('/')}/auth/realms/{realm}{_TOKEN_SUFFIX}"


def realm_base(url: str) -> str:
    """`…/auth/realms/{realm}`: the issuer of the realm's tokens, and the root of its JWKS."""
    return url[: -len(_TOKEN_SUFFIX)] if url.endswith(_TOKEN_SUFFIX) else url.rsplit("/", 1)[0]


def basic_authorization(client_id: str, client_secret: str) -> str:
    pair = f"{client_id}:{client_secret}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def create_idp_client(*, timeout: float) -> httpx.AsyncClient:
    """One pooled client for every realm: connections to the IdP are reused."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)),
        limits=httpx.Limits(max_connections=50, max_keepalive_connections=10),
        follow_redirects=False,
        headers={"User-Agent": "atlas-token-broker"},
    )


class KeycloakTokenIssuer:
    """Fetches a realm's token and verifies it against the realm's JWKS before handing it
    on: nothing unverified is ever cached or served."""

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        idp_url: str | None,
        clock: Clock,
        allowed_origins: Iterable[str] = (),
    ) -> None:
        self._client = client
        self._idp_url = idp_url
        self._clock = clock
        self._allowed = origins.allowed_origins(idp_url, allowed_origins)
        self._verifier = JwksVerifier(client)

    def url_for(self, credentials: RealmCredentials) -> str:
        """The realm's token endpoint; IdPOriginNotAllowed (logged with the realm and
        origin) when a URL from the secret store points outside the allowed origins."""
        if credentials.token_url:
            return self._allowed_url(credentials.realm, credentials.token_url)
        if not self._idp_url:
            raise IdPBadResponse(
                f"realm {credentials.realm!r} has no token_url and BROKER_IDP_URL is not set"
            )
        return token_url(self._idp_url, credentials.realm)

    def _allowed_url(self, realm: str, url: str) -> str:
        try:
            return origins.check_realm_url(realm, url, self._allowed)
        except IdPOriginNotAllowed:
            log.error(
                "realm IdP URL refused: origin not allowed, nothing sent",
                extra={"realm": realm, "origin": _origin_shown(url)},
            )
            raise

    async def fetch(self, credentials: RealmCredentials) -> AccessToken:
        form = {"grant_type": "client_credentials"}
        if credentials.scope:
            form["scope"] = credentials.scope
        headers = {
            "Authorization": basic_authorization(
                credentials.client_id, credentials.client_secret.get_secret_value()
            ),
            "Accept": "application/json",
        }
        url = self.url_for(credentials)
        issued_at = self._clock.now()
        try:
            response = await self._client.post(url, data=form, headers=headers)
        except httpx.TimeoutException as exc:
            raise IdPUnavailable("the identity provider did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise IdPUnavailable(
                f"the identity provider is unreachable ({type(exc).__name__})"
            ) from exc
        token = self._parse(response, issued_at=issued_at, version=credentials.version)
        # The keys and the issuer come from the token endpoint's own (allowed) origin.
        base = realm_base(url)
        jwks_url = self._allowed_url(credentials.realm, f"{base}/protocol/openid-connect/certs")
        try:
            await self._verifier.verify(token.value, jwks_url=jwks_url, issuer=base)
        except VerificationError as exc:
            raise IdPBadResponse(f"the identity provider's token was refused: {exc}") from exc
        return token

    def _parse(self, response: httpx.Response, *, issued_at: float, version: int) -> AccessToken:
        status = response.status_code
        if status in _UNAVAILABLE_STATUSES:
            raise IdPUnavailable(f"the identity provider answered HTTP {status}")
        body = _json_object(response)
        if status != 200:
            error = body.get("error") if body else None
            # RFC 6749 §5.2 errors come with 4xx; a 5xx is the IdP failing, whatever it says.
            if isinstance(error, str) and 400 <= status < 500:
                reason = error if error in _OAUTH_ERRORS else "unexpected_error"
                raise IdPRejected(f"the identity provider answered {reason!r}", reason=reason)
            raise IdPBadResponse(f"the identity provider answered HTTP {status}")
        if body is None:
            raise IdPBadResponse("the identity provider's answer is not a JSON object")
        value = body.get("access_token")
        if not isinstance(value, str) or not value:
            raise IdPBadResponse("the identity provider's answer has no access_token")
        token_type = body.get("token_type")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise IdPBadResponse("the identity provider's token is not a Bearer token")
        expires_in = body.get("expires_in")
        if (
            not isinstance(expires_in, int | float)
            or isinstance(expires_in, bool)
            or expires_in <= 0
        ):
            raise IdPBadResponse("the identity provider's answer has no valid expires_in")
        expires_at = rules.expires_at(
            issued_at=issued_at, exp=_jwt_exp(value), expires_in=float(expires_in)
        )
        if expires_at <= self._clock.now():
            raise IdPBadResponse("the identity provider issued an expired token")
        scope = body.get("scope")
        return AccessToken(
            value=value,
            expires_at=expires_at,
            issued_at=issued_at,
            scope=scope if isinstance(scope, str) and scope else None,
            credential_version=version,
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def _origin_shown(url: str) -> str:
    try:
        return origins.origin_of(url)
    except ValueError:
        return "(not an http(s) URL)"


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _jwt_exp(value: str) -> float:
    """The `exp` claim, read without verifying the signature (only the expiry is used)."""
    try:
        claims = jwt.decode(value, options={"verify_signature": False, "verify_exp": False})
    except jwt.PyJWTError as exc:
        raise IdPBadResponse("the identity provider's access_token is not a JWT") from exc
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise IdPBadResponse("the identity provider's access_token has no exp claim")
    return float(exp)
