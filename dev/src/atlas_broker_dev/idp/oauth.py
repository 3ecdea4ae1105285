"""The Keycloak-style OAuth2 endpoints: token (client credentials), JWKS and discovery.

Only the client-credentials grant exists (RFC 6749 §4.4). Errors follow RFC 6749 §5.2,
except an unknown realm, which answers 404 ``Realm does not exist`` as Keycloak does.
Injected faults (see ``state.Fault``) are applied here, because they stand in for a
misbehaving token endpoint. Logs name realm, client id and outcome, never a secret or a
token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import logging
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from atlas_broker_dev.idp.config import REALM_PATHS, AuthMethod, DevClient
from atlas_broker_dev.idp.state import Fault, IdPState
from atlas_broker_dev.idp.tokens import (
    access_token_claims,
    opaque_token,
    realm_issuer,
    tamper_signature,
    unsigned_token,
)

logger = logging.getLogger("atlas_broker_dev.idp")

TOKEN_PATH = "/protocol/openid-connect/token"
CERTS_PATH = "/protocol/openid-connect/certs"
DISCOVERY_PATH = "/.well-known/openid-configuration"

_MAX_FORM_BYTES = 64 * 1024
_HANG_SECONDS = 3600.0
_DEFAULT_SCOPE = "profile email"
# RFC 6749 §5.1: token responses must not be cached.
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(Exception):
    """An RFC 6749 §5.2 error response."""

    def __init__(
        self, status: int, error: str, description: str, *, basic_realm: str | None = None
    ) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description
        self.basic_realm = basic_realm

    def response(self) -> JSONResponse:
        headers = dict(_NO_STORE)
        if self.basic_realm is not None:
            # RFC 6749 §5.2: a client that tried Basic must be challenged with Basic.
            headers["WWW-Authenticate"] = f'Basic realm="{self.basic_realm}"'
        body = {"error": self.error, "error_description": self.description}
        return JSONResponse(body, status_code=self.status, headers=headers)


def oauth_router(state: IdPState) -> APIRouter:
    """Routes under both realm layouts, ``/auth/realms/{realm}`` (Keycloak before 17) and
    ``/realms/{realm}``; each realm answers only under the one its options name."""
    router = APIRouter()
    for path in REALM_PATHS:
        _add_realm_routes(router, state, path)
    return router


def _add_realm_routes(router: APIRouter, state: IdPState, path: str) -> None:
    def served_here(realm: str) -> bool:
        return realm in state.clients and state.realm_options(realm).path == path

    @router.post(path + "/{realm}" + TOKEN_PATH)
    async def token(realm: str, request: Request) -> Response:
        state.token_requests[realm] += 1
        host = request.headers.get("host", "")
        state.token_hosts.setdefault(realm, collections.Counter())[host] += 1
        fault = state.take_fault(realm)
        if fault is not None:
            early = await _transport_fault(fault, request)
            if early is not None:
                logger.info("token request realm=%s fault=%s", realm, fault.mode)
                return early
        if not served_here(realm):
            return _realm_not_found()
        try:
            client, scope = await _grant(state, realm, request)
        except OAuthError as exc:
            logger.info("token request realm=%s refused error=%s", realm, exc.error)
            return exc.response()
        body = _token_body(state, realm, client, scope, str(request.base_url), fault)
        if "access_token" in body:
            state.tokens_issued[realm] += 1
        mode = fault.mode if fault is not None else "none"
        logger.info("token issued realm=%s client_id=%s fault=%s", realm, client.client_id, mode)
        return JSONResponse(body, headers=_NO_STORE)

    @router.get(path + "/{realm}" + CERTS_PATH)
    async def certs(realm: str) -> Response:
        if not served_here(realm):
            return _realm_not_found()
        return JSONResponse({"keys": [state.keys[realm].public_jwk]})

    @router.get(path + "/{realm}" + DISCOVERY_PATH)
    async def discovery(realm: str, request: Request) -> Response:
        state.discovery_requests[realm] += 1
        options = state.realm_options(realm)
        if not served_here(realm) or not options.discovery:
            return _realm_not_found()
        # Endpoints under the URL this request reached, as Keycloak serves them to its
        # back channel; the issuer may be a public name fixed in the realm's options.
        here = realm_issuer(str(request.base_url), realm, path)
        document = {
            "issuer": state.issuer(str(request.base_url), realm),
            "token_endpoint": f"{here}{TOKEN_PATH}",
            "jwks_uri": f"{here}{CERTS_PATH}",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": list(options.auth_methods),
            "id_token_signing_alg_values_supported": ["RS256"],
        }
        return JSONResponse({**document, **options.discovery_overrides})


def _realm_not_found() -> JSONResponse:
    return JSONResponse({"error": "Realm does not exist"}, status_code=404)


async def _transport_fault(fault: Fault, request: Request) -> Response | None:
    """Faults that happen before the request is looked at; ``None`` lets it proceed."""
    if fault.mode == "delay":
        await asyncio.sleep(fault.seconds)
        return None
    if fault.mode == "hang":
        # Wait without blocking the loop, and stop once the client gave up, so a hung
        # request does not keep the server from shutting down for an hour.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_HANG_SECONDS):
                await _client_disconnected(request)
        return JSONResponse({"error": "timeout"}, status_code=504)
    if fault.mode == "status_500":
        body = {"error": "unknown_error", "error_description": "injected fault: status_500"}
        return JSONResponse(body, status_code=500)
    if fault.mode == "html":
        page = "<!DOCTYPE html><html><body><h1>We are sorry...</h1></body></html>"
        return Response(page, media_type="text/html; charset=utf-8")
    if fault.mode == "garbage":
        # A cut-off body under a JSON content type, like a proxy dropping the connection.
        return Response(b'{"access_token": "eyJhbGciOi', media_type="application/json")
    return None


async def _client_disconnected(request: Request) -> None:
    # The ASGI receive channel yields the (unread) body first, then blocks until the
    # client disconnects.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _grant(state: IdPState, realm: str, request: Request) -> tuple[DevClient, str]:
    """Validate a client-credentials request; the authenticated client and granted scope."""
    form = await _read_form(request)
    grant_type = form.get("grant_type")
    if not grant_type:
        raise OAuthError(400, "invalid_request", "Missing form parameter: grant_type")
    if grant_type != "client_credentials":
        raise OAuthError(400, "unsupported_grant_type", "Unsupported grant_type")
    client = _authenticate(state, realm, request.headers.get("authorization"), form)
    return client, _granted_scope(client, form.get("scope"))


def _check_method(state: IdPState, realm: str, method: AuthMethod) -> None:
    if method not in state.realm_options(realm).auth_methods:
        raise OAuthError(400, "unauthorized_client", f"Client authentication {method} refused")


async def _read_form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise OAuthError(400, "invalid_request", "Expected application/x-www-form-urlencoded")
    raw = await request.body()
    if len(raw) > _MAX_FORM_BYTES:
        raise OAuthError(400, "invalid_request", "Request body too large")
    try:
        pairs = urllib.parse.parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise OAuthError(400, "invalid_request", "Malformed form body") from exc
    form = dict(pairs)
    if len(form) != len(pairs):
        # RFC 6749 §3.2: request parameters must not be included more than once.
        raise OAuthError(400, "invalid_request", "Duplicated form parameter")
    return form


def _authenticate(
    state: IdPState, realm: str, authorization: str | None, form: Mapping[str, str]
) -> DevClient:
    """client_secret_basic or client_secret_post, never both (RFC 6749 §2.3.1)."""
    scheme, _, credentials = (authorization or "").partition(" ")
    basic_realm = realm if scheme.lower() == "basic" else None
    if basic_realm is not None:
        _check_method(state, realm, "client_secret_basic")
        client_id, secret = _decode_basic(credentials.strip(), realm)
        if "client_secret" in form:
            raise OAuthError(400, "invalid_request", "Multiple client authentication methods")
        if form.get("client_id", client_id) != client_id:
            raise OAuthError(400, "invalid_request", "client_id does not match the credentials")
    else:
        _check_method(state, realm, "client_secret_post")
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
    client = state.find_client(realm, client_id, secret) if client_id and secret else None
    if client is None:
        raise OAuthError(
            401,
            "invalid_client",
            "Invalid client or Invalid client credentials",
            basic_realm=basic_realm,
        )
    return client


def _decode_basic(credentials: str, realm: str) -> tuple[str, str]:
    # RFC 6749 §2.3.1: id and secret are form-urlencoded before being joined with ":".
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise OAuthError(
            401, "invalid_client", "Malformed Basic credentials", basic_realm=realm
        ) from exc
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise OAuthError(401, "invalid_client", "Malformed Basic credentials", basic_realm=realm)
    return urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(secret)


def _granted_scope(client: DevClient, requested: str | None) -> str:
    """The requested scopes (the client's default when none), if the client may have them."""
    wanted = list(dict.fromkeys((requested or "").split()))
    if not wanted:
        return client.scope or _DEFAULT_SCOPE
    allowed = client.allowed_scopes()
    if allowed is not None and not set(wanted) <= allowed:
        raise OAuthError(400, "invalid_scope", "Invalid scopes: " + " ".join(wanted))
    return " ".join(wanted)


def _token_body(
    state: IdPState, realm: str, client: DevClient, scope: str, base_url: str, fault: Fault | None
) -> dict[str, Any]:
    """The success response, bent by a token-shaped fault when one is active."""
    mode = fault.mode if fault is not None else None
    lifetime = state.token_lifetime
    issued_at = int(time.time())
    if mode == "expired":
        issued_at -= lifetime + 120
    issuer_realm = f"{realm}-foreign" if mode == "foreign_issuer" else realm
    claims = access_token_claims(
        issuer=state.issuer(base_url, issuer_realm),
        realm=realm,
        client=client,
        scope=scope,
        issued_at=issued_at,
        lifetime=lifetime,
    )
    signed = mode != "alg_none"
    access_token = state.keys[realm].sign(claims) if signed else unsigned_token(claims)
    if state.realm_options(realm).token_format == "opaque":
        access_token = opaque_token()
    elif mode == "bad_signature":
        access_token = tamper_signature(access_token)
    body: dict[str, Any] = {
        "access_token": access_token,
        "expires_in": lifetime,
        "refresh_expires_in": 0,
        "token_type": "mac" if mode == "wrong_token_type" else "Bearer",
        "not-before-policy": 0,
        "scope": scope,
    }
    if mode == "no_access_token":
        del body["access_token"]
    return body
