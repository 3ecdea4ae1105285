"""The drop-in token endpoint: the IdP's own client-credentials request, answered by the broker.

`POST /auth/realms/{realm}/protocol/openid-connect/token` takes exactly the request an
OAuth2 client library already sends to the IdP (RFC 6749 §4.4), with the caller's policy
*name* as `client_id` and its API key as `client_secret`, as HTTP Basic credentials
(`client_secret_basic`) or as form fields (`client_secret_post`), never both. It answers
like the IdP: `{"access_token", "token_type": "Bearer", "expires_in", "scope"?}` with
`Cache-Control: no-store`. Policy, audit and the `min_ttl` default (60 s, overridable by a
non-standard `min_ttl` form field) are those of `GET /v1/realms/{realm}/token`: both end in
`TokenBroker.issue`, which checks authorization before it looks at the realm, and both
pass the caller's rate limit and audit its refusals through the same `Gatekeeper`.

Errors are RFC 6749 §5.2 JSON (`application/json`, not problem+json, because that is what
OAuth2 client libraries parse):

    401 invalid_client           no, unknown or mismatched client credentials
                                 (with `WWW-Authenticate: Basic realm="atlas-broker"`)
    400 invalid_request          body not a form or too large, duplicated parameters, no
                                 grant_type, Basic and form credentials together, a
                                 malformed realm name or min_ttl; an allowed caller naming a
                                 realm without credentials in Vault or a min_ttl the realm's
                                 tokens cannot meet
    400 unsupported_grant_type   a grant other than client_credentials
    400 unauthorized_client      the caller may not use the realm (whether it exists or not)
    400 invalid_scope            a malformed `scope`, one the caller's policy entry does not
                                 allow, or one the IdP refused
    429 temporarily_unavailable  the caller's rate limit (with Retry-After)
    502 server_error             the IdP refused the realm's credentials or answered junk
    503 temporarily_unavailable  the IdP or Vault is unreachable and nothing valid is cached
                                 (with Retry-After)

502 and 503 keep the HTTP status of the v1 endpoint (a gateway's upstream failed) while
the body carries the RFC code a client library understands. The unknown-realm answer is
given only to callers allowed that realm, so no caller learns which realms exist.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import re
import urllib.parse
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from broker.core import rules
from broker.core.errors import (
    BrokerError,
    CallerError,
    Forbidden,
    InvalidRequest,
    InvalidScope,
    RealmNotFound,
    ScopeNotAllowed,
    Unauthenticated,
    UpstreamError,
)
from broker.core.policy import Caller, Policy
from broker.http.deps import BrokerDep, ContextDep, StateDep

log = logging.getLogger(__name__)

router = APIRouter(tags=["oauth2"])

TOKEN_PATH = "/auth/realms/{realm}/protocol/openid-connect/token"
DISCOVERY_PATH = "/auth/realms/{realm}/.well-known/openid-configuration"

_FORM_TYPE = "application/x-www-form-urlencoded"
_MAX_FORM_BYTES = 16 * 1024  # a client-credentials form is a few hundred bytes
_MAX_FORM_FIELDS = 32
_DEFAULT_MIN_TTL = 60  # as GET /v1/realms/{realm}/token
_MAX_MIN_TTL = 86400
# RFC 6749 §5.1: token responses (and so their errors) must not be cached.
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# RFC 6749 §5.2 + RFC 9110 §15.5.2: a 401 names the scheme the client should use.
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="atlas-broker"'}
# RFC 6749 §5.2: error_description is limited to these characters.
_DESCRIPTION_UNSAFE = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")

# The pattern is documented but checked by the routes themselves, so a bad realm gets an
# RFC 6749 error body rather than FastAPI's validation problem.
RealmPath = Annotated[
    str,
    Path(
        description="Realm name.",
        examples=["acme"],
        json_schema_extra={"pattern": rules.REALM_PATTERN},
    ),
]


class OAuthTokenResponse(BaseModel):
    """RFC 6749 §5.1 access token response, as the IdP gives it."""

    access_token: str = Field(description="The Atlas bearer token (a JWT).")
    token_type: str = Field(default="Bearer", examples=["Bearer"])
    expires_in: int = Field(description="Seconds until the token expires.", examples=[3412])
    scope: str | None = Field(default=None, description="Present when the token has a scope.")


class OAuthErrorResponse(BaseModel):
    """RFC 6749 §5.2 error response."""

    error: str = Field(examples=["invalid_client"])
    error_description: str = Field(examples=["unknown client or wrong client credentials"])


class DiscoveryDocument(BaseModel):
    """The subset of OpenID Provider metadata a client-credentials client reads."""

    issuer: str = Field(examples=["http://broker:8080/auth/realms/acme"])
    token_endpoint: str = Field(
        examples=["http://broker:8080/auth/realms/acme/protocol/openid-connect/token"]
    )
    grant_types_supported: list[str] = Field(examples=[["client_credentials"]])
    token_endpoint_auth_methods_supported: list[str] = Field(
        examples=[["client_secret_basic", "client_secret_post"]]
    )


class OAuthError(Exception):
    """An RFC 6749 §5.2 error, rendered as JSON by `response()`."""

    def __init__(
        self, status: int, error: str, description: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {
            "error": self.error,
            "error_description": _DESCRIPTION_UNSAFE.sub("?", self.description)[:300],
        }
        return JSONResponse(body, status_code=self.status, headers={**_NO_STORE, **self.headers})


def _oauth_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    meaning = {
        400: "invalid_request, unsupported_grant_type or unauthorized_client",
        401: "invalid_client (with `WWW-Authenticate: Basic`)",
        429: "temporarily_unavailable: the caller's rate limit (with `Retry-After`)",
        502: "server_error: the IdP refused the realm's credentials or answered junk",
        503: "temporarily_unavailable: the IdP or Vault is unreachable (with `Retry-After`)",
    }
    return {s: {"model": OAuthErrorResponse, "description": meaning[s]} for s in statuses}


_TOKEN_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            _FORM_TYPE: {
                "schema": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["grant_type"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["client_credentials"]},
                        "client_id": {
                            "type": "string",
                            "description": "The caller's name (client_secret_post only).",
                        },
                        "client_secret": {
                            "type": "string",
                            "format": "password",
                            "description": "The caller's API key (client_secret_post only).",
                        },
                        "scope": {
                            "type": "string",
                            "description": "Space-separated scopes the caller's policy entry "
                            "allows: a token carrying just these. Absent: the realm's default.",
                        },
                        "min_ttl": {
                            "type": "integer",
                            "minimum": 0,
                            "maximum": _MAX_MIN_TTL,
                            "default": _DEFAULT_MIN_TTL,
                            "description": "Broker extension: seconds the token must still be "
                            "valid.",
                        },
                    },
                }
            }
        },
    }
}


@router.post(
    TOKEN_PATH,
    response_model=OAuthTokenResponse,
    response_model_exclude_none=True,
    summary="Drop-in OAuth2 token endpoint (client credentials)",
    description="The IdP's token request, answered by the broker. Send the caller's name and "
    "API key as HTTP Basic credentials (or as `client_id`/`client_secret` form fields).",
    responses=_oauth_responses(400, 401, 429, 502, 503),
    openapi_extra=_TOKEN_REQUEST_BODY,
)
async def token(
    request: Request,
    state: StateDep,
    broker: BrokerDep,
    ctx: ContextDep,
    realm: RealmPath,
) -> JSONResponse:
    # Refusals and the rate limit go through the same gate as the v1 endpoint's callers.
    audited_realm = realm if rules.is_valid_realm(realm) else None
    try:
        form = await _read_form(request)
        try:
            caller = _authenticate(
                state.policy.current(), request.headers.get("authorization"), form
            )
        except OAuthError as exc:
            if exc.error == "invalid_client":
                await state.gate.refused(
                    Unauthenticated(exc.description),
                    ctx=ctx,
                    realm=audited_realm,
                    reason="invalid-client",
                )
            raise
        await state.gate.throttle(caller, ctx=ctx, realm=audited_realm, token_request=True)
        min_ttl = _check_grant(form, realm)
        scopes = _scopes(form)
        issued = await broker.issue(caller, realm, min_ttl=min_ttl, ctx=ctx, scopes=scopes)
    except OAuthError as exc:
        return exc.response()
    except BrokerError as exc:
        return _from_broker_error(exc).response()
    access = issued.token
    body: dict[str, Any] = {
        "access_token": access.value,
        "token_type": "Bearer",
        "expires_in": max(0, int(access.expires_at - broker.now())),
    }
    if access.scope:
        body["scope"] = access.scope
    return JSONResponse(body, headers=_NO_STORE)


@router.get(
    DISCOVERY_PATH,
    response_model=DiscoveryDocument,
    summary="OpenID discovery pointing OAuth2 clients at the broker",
    description="Public, like the IdP's. Says nothing about whether the realm exists.",
    responses=_oauth_responses(400),
)
async def discovery(request: Request, realm: RealmPath) -> JSONResponse:
    if not rules.is_valid_realm(realm):
        return OAuthError(400, "invalid_request", "malformed realm name").response()
    issuer = f"{str(request.base_url).rstrip('/')}/auth/realms/{realm}"
    document = DiscoveryDocument(
        issuer=issuer,
        token_endpoint=f"{issuer}/protocol/openid-connect/token",
        grant_types_supported=["client_credentials"],
        token_endpoint_auth_methods_supported=["client_secret_basic", "client_secret_post"],
    )
    return JSONResponse(document.model_dump())


# -- request parsing ----------------------------------------------------------------------


async def _read_form(request: Request) -> dict[str, str]:
    """The form body, parsed without python-multipart, refused past `_MAX_FORM_BYTES`."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != _FORM_TYPE:
        raise OAuthError(400, "invalid_request", f"the body must be {_FORM_TYPE}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > _MAX_FORM_BYTES:
        raise OAuthError(400, "invalid_request", "request body too large")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > _MAX_FORM_BYTES:
            raise OAuthError(400, "invalid_request", "request body too large")
    try:
        pairs = urllib.parse.parse_qsl(
            raw.decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=_MAX_FORM_FIELDS,
            errors="strict",  # a percent-encoded byte that is not UTF-8 is refused
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise OAuthError(400, "invalid_request", "malformed form body") from exc
    form = dict(pairs)
    if len(form) != len(pairs):
        # RFC 6749 §3.2: request parameters must not be included more than once.
        raise OAuthError(400, "invalid_request", "duplicated form parameter")
    return form


def _check_grant(form: dict[str, str], realm: str) -> int:
    """Refuse anything but a well-formed client-credentials request; its min_ttl."""
    grant_type = form.get("grant_type")
    if not grant_type:
        raise OAuthError(400, "invalid_request", "missing form parameter: grant_type")
    if grant_type != "client_credentials":
        raise OAuthError(400, "unsupported_grant_type", "only client_credentials is supported")
    if not rules.is_valid_realm(realm):
        raise OAuthError(400, "invalid_request", "malformed realm name")
    value = form.get("min_ttl")
    if value is None:
        return _DEFAULT_MIN_TTL
    if not (value.isascii() and value.isdigit()) or int(value) > _MAX_MIN_TTL:
        raise OAuthError(400, "invalid_request", f"min_ttl must be an integer 0..{_MAX_MIN_TTL}")
    return int(value)


def _scopes(form: dict[str, str]) -> tuple[str, ...]:
    try:
        return rules.parse_scopes(form.get("scope"))
    except ValueError as exc:
        raise OAuthError(400, "invalid_scope", str(exc)) from None


def _authenticate(policy: Policy, authorization: str | None, form: dict[str, str]) -> Caller:
    """client_secret_basic or client_secret_post, never both (RFC 6749 §2.3)."""
    if authorization is not None:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise _invalid_client("use HTTP Basic or client_id/client_secret form fields")
        if "client_secret" in form:
            raise OAuthError(400, "invalid_request", "more than one client authentication method")
        candidates = _basic_candidates(credentials.strip())
        if "client_id" in form and form["client_id"] not in {name for name, _ in candidates}:
            raise OAuthError(400, "invalid_request", "client_id does not match the credentials")
    else:
        candidates = [(form.get("client_id", ""), form.get("client_secret", ""))]
    for name, key in candidates:
        caller = policy.caller_for_key(key) if name and key else None
        # The key was matched by its hash; the name is compared in constant time anyway.
        if caller is not None and hmac.compare_digest(caller.name.encode(), name.encode()):
            return caller
    raise _invalid_client("unknown client or wrong client credentials")


def _basic_candidates(credentials: str) -> list[tuple[str, str]]:
    """(name, key) pairs a Basic credential may mean.

    RFC 6749 §2.3.1 form-urlencodes both before base64; many clients (authlib, requests'
    HTTPBasicAuth) do not, so the undecoded pair is tried too. Both lookups are by hash.
    """
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise _invalid_client("malformed Basic credentials") from exc
    name, colon, key = decoded.partition(":")
    if not colon:
        raise _invalid_client("malformed Basic credentials")
    unquoted = (urllib.parse.unquote_plus(name), urllib.parse.unquote_plus(key))
    return [unquoted] if unquoted == (name, key) else [unquoted, (name, key)]


def _invalid_client(description: str) -> OAuthError:
    return OAuthError(401, "invalid_client", description, headers=_CHALLENGE)


def _from_broker_error(exc: BrokerError) -> OAuthError:
    """The broker's error as the nearest RFC 6749 §5.2 error (table in the module doc)."""
    if isinstance(exc, ScopeNotAllowed | InvalidScope):
        return OAuthError(400, "invalid_scope", exc.detail)
    if isinstance(exc, Forbidden):
        return OAuthError(400, "unauthorized_client", exc.detail)
    if isinstance(exc, Unauthenticated):
        return _invalid_client(exc.detail)
    if isinstance(exc, RealmNotFound | InvalidRequest):
        return OAuthError(400, "invalid_request", exc.detail)
    if exc.status in (429, 503):
        return OAuthError(exc.status, "temporarily_unavailable", exc.detail, headers=exc.headers())
    if isinstance(exc, CallerError):
        return OAuthError(400, "invalid_request", exc.detail)
    if isinstance(exc, UpstreamError):
        return OAuthError(502, "server_error", exc.detail, headers=exc.headers())
    log.error("unexpected broker error", extra={"error": exc.slug})
    return OAuthError(500, "server_error", "the broker failed unexpectedly")
