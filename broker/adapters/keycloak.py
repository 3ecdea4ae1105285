"""`KeycloakTokenIssuer`: the client-credentials grant against an OAuth2 realm.

The request is the one the Atlas documentation gives: `POST {token endpoint}` with
`Authorization: Basic base64(ClientId:ClientSecret)` (or, with `auth_method:
client_secret_post`, both in the form) and the form body `grant_type=client_credentials`.
The token endpoint, the JWKS and the issuer come from the realm's discovery document,
else from Keycloak's paths under `{BROKER_IDP_URL}{BROKER_IDP_REALM_PATH}`.

Every URL (a realm's own `token_url` from Vault, the discovery document and whatever it
names) is used only at an allowed origin (`origins`): the secret is never sent, and no
JWKS or issuer is taken, anywhere else.

What is accepted depends on the realm's `verify` mode: `auto` verifies a JWT against the
realm's JWKS and accepts an opaque token as issued over the allowed origin, `jwks`
accepts only JWTs that verify, `none` verifies nothing.
"""

from __future__ import annotations

import base64
import functools
import logging
import ssl
from collections.abc import Iterable
from typing import Any

import httpx
import jwt

from broker.adapters.idp_discovery import KEYCLOAK_TOKEN_SUFFIX, RealmDiscovery, RealmEndpoints
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


_TOKEN_SUFFIX = KEYCLOAK_TOKEN_SUFFIX
DEFAULT_REALM_PATH = "/auth/realms/{realm}"


def token_url(idp_url: str, realm: str, realm_path: str = DEFAULT_REALM_PATH) -> str:
    return realm_url(idp_url, realm, realm_path) + _TOKEN_SUFFIX


def realm_url(idp_url: str, realm: str, realm_path: str = DEFAULT_REALM_PATH) -> str:
    """The realm's base under the IdP: `{idp}/auth/realms/{realm}` by default,
    `{idp}/realms/{realm}` with Keycloak 17's layout."""
    return idp_url.rstrip("/") + realm_path.replace("{realm}", realm)


def realm_base(url: str) -> str:
    """`…/auth/realms/{realm}` (or `…/realms/{realm}`): the root of the realm's discovery
    document and, without one, its issuer and the root of its JWKS."""
    return url[: -len(_TOKEN_SUFFIX)] if url.endswith(_TOKEN_SUFFIX) else url.rsplit("/", 1)[0]


def basic_authorization(client_id: str, client_secret: str) -> str:
    pair = f"{client_id}:{client_secret}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


@functools.cache
def _idp_tls_context() -> ssl.SSLContext:
    """The trust store of every IdP client in this process, loaded once: each context holds
    its own copy of the CA bundle (about 0.8 MiB). httpx's default (SSL_CERT_FILE or
    SSL_CERT_DIR from the environment, else certifi's bundle), read at first use."""
    return httpx.create_ssl_context()


def create_idp_client(*, timeout: float) -> httpx.AsyncClient:
    """One pooled client for every realm: connections to the IdP are reused."""
    return httpx.AsyncClient(
        verify=_idp_tls_context(),
        timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)),
        limits=httpx.Limits(max_connections=50, max_keepalive_connections=10),
        follow_redirects=False,
        headers={"User-Agent": "atlas-token-broker"},
    )


class KeycloakTokenIssuer:
    """Fetches a realm's token and checks it as the realm's `verify` mode says before
    handing it on: nothing that fails the check is ever cached or served."""

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        idp_url: str | None,
        clock: Clock,
        allowed_origins: Iterable[str] = (),
        realm_path: str = DEFAULT_REALM_PATH,
    ) -> None:
        self._client = client
        self._idp_url = idp_url
        self._clock = clock
        self._allowed = origins.allowed_origins(idp_url, allowed_origins)
        self._realm_path = realm_path
        self._verifier = JwksVerifier(client)
        self._discovery = RealmDiscovery(client, monotonic=clock.monotonic)

    def url_for(self, credentials: RealmCredentials) -> str:
        """The realm's token_url, else Keycloak's token path under BROKER_IDP_URL (whose
        base is where discovery is read); IdPOriginNotAllowed (logged with the realm and
        origin) when a URL from the secret store points outside the allowed origins."""
        if credentials.token_url:
            return self._allowed_url(credentials.realm, credentials.token_url)
        if not self._idp_url:
            raise IdPBadResponse(
                f"realm {credentials.realm!r} has no token_url and BROKER_IDP_URL is not set"
            )
        return token_url(self._idp_url, credentials.realm, self._realm_path)

    async def endpoints(self, credentials: RealmCredentials) -> RealmEndpoints:
        """The realm's token endpoint, JWKS and issuer, every one at an allowed origin.
        A token_url from Vault wins over the discovery document's token endpoint."""
        url = self.url_for(credentials)
        realm = credentials.realm
        discovered = await self._discovery.endpoints(
            realm_base(url), lambda candidate: self._allowed_url(realm, candidate)
        )
        token_endpoint = url if credentials.token_url else discovered.token_endpoint
        return RealmEndpoints(
            token_endpoint=token_endpoint,
            jwks_uri=discovered.jwks_uri,
            issuer=credentials.issuer or discovered.issuer,
            discovered=discovered.discovered,
        )

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
        endpoints = await self.endpoints(credentials)
        form, headers = _request(credentials)
        issued_at = self._clock.now()
        try:
            response = await self._client.post(endpoints.token_endpoint, data=form, headers=headers)
        except httpx.TimeoutException as exc:
            raise IdPUnavailable("the identity provider did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise IdPUnavailable(
                f"the identity provider is unreachable ({type(exc).__name__})"
            ) from exc
        token = self._parse(response, issued_at=issued_at, version=credentials.version)
        await self._check(token, credentials.verify, endpoints)
        return token

    async def _check(self, token: AccessToken, mode: str, endpoints: RealmEndpoints) -> None:
        """Apply the realm's verify mode (see the module docstring)."""
        if mode == "none":
            return
        if _jwt_claims(token.value) is None:
            if mode == "jwks":
                raise IdPBadResponse(
                    "the identity provider's access_token is not a JWT (the realm's verify is jwks)"
                )
            return  # auto: an opaque token, issued over an allowed origin
        try:
            await self._verifier.verify(
                token.value, jwks_url=endpoints.jwks_uri, issuer=endpoints.issuer
            )
        except VerificationError as exc:
            raise IdPBadResponse(f"the identity provider's token was refused: {exc}") from exc

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
        # Counted from the moment the request was sent: the token cannot have lived less.
        expires_at = issued_at + float(expires_in)
        exp = _jwt_exp(value)
        if exp is not None:
            expires_at = rules.expires_at(
                issued_at=issued_at, exp=exp, expires_in=float(expires_in)
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


def _request(credentials: RealmCredentials) -> tuple[dict[str, str], dict[str, str]]:
    """The form and headers of the grant: the secret in Basic (the default) or the form."""
    form = {"grant_type": "client_credentials"}
    if credentials.scope:
        form["scope"] = credentials.scope
    headers = {"Accept": "application/json"}
    secret = credentials.client_secret.get_secret_value()
    if credentials.auth_method == "client_secret_post":
        form.update(client_id=credentials.client_id, client_secret=secret)
    else:
        headers["Authorization"] = basic_authorization(credentials.client_id, secret)
    return form, headers


def _jwt_claims(value: str) -> dict[str, Any] | None:
    """The claims of a JWT, read without verifying anything; None for an opaque token."""
    try:
        claims = jwt.decode(value, options={"verify_signature": False, "verify_exp": False})
    except jwt.PyJWTError:
        return None
    return claims if isinstance(claims, dict) else None


def _jwt_exp(value: str) -> float | None:
    """A JWT's `exp` (only the expiry is used, unverified); None for an opaque token or a
    JWT without one, whose life is then `expires_in` alone."""
    claims = _jwt_claims(value)
    if claims is None or claims.get("exp") is None:
        return None
    exp = claims["exp"]
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise IdPBadResponse("the identity provider's access_token has no valid exp claim")
    return float(exp)
