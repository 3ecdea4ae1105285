"""`GET /v1/realms/{realm}/token`: a ready Atlas token for an allowed caller."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field

from broker.core import rules
from broker.core.audit import iso_time
from broker.core.errors import InvalidRequest
from broker.core.models import IssuedToken
from broker.http.deps import CallerDep, app_state_of, request_context
from broker.http.problems import problem_responses

router = APIRouter(tags=["tokens"])
DEFAULT_MIN_TTL = 60
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

RealmPath = Annotated[
    str,
    Path(
        description="Realm name.",
        pattern=rules.REALM_PATTERN,
        examples=["acme"],
    ),
]


class TokenResponse(BaseModel):
    access_token: str = Field(description="The Atlas bearer token (a JWT).")
    token_type: str = Field(default="Bearer", examples=["Bearer"])
    expires_in: int = Field(description="Seconds until the token expires.", examples=[3412])
    expires_at: str = Field(description="Expiry, RFC 3339 UTC.", examples=["2026-11-27T20:13:05Z"])
    realm: str = Field(examples=["acme"])
    scope: str | None = Field(
        default=None, description="The scope asked for with `?scope=`.", examples=["reports.read"]
    )


@router.get(
    "/v1/realms/{realm}/token",
    response_model=TokenResponse,
    summary="Get a ready token for a realm",
    responses=problem_responses(400, 401, 403, 404, 422, 429, 431, 502, 503),
)
async def get_token(
    realm: RealmPath,
    caller: CallerDep,
    request: Request,
    min_ttl: Annotated[
        int, Query(ge=0, le=86400, description="Seconds the token must still be valid.")
    ] = DEFAULT_MIN_TTL,
    scope: Annotated[
        str | None,
        Query(
            max_length=2048,
            description="Space-separated scopes: a token carrying just these (the caller's "
            "policy entry must allow each). Absent: the realm's default token.",
            examples=["reports.read"],
        ),
    ] = None,
) -> Response:
    broker = app_state_of(request).broker
    try:
        scopes = rules.parse_scopes(scope)
    except ValueError as exc:
        raise InvalidRequest(f"scope: {exc}") from None
    issued = await broker.issue(
        caller, realm, min_ttl=min_ttl, ctx=request_context(request), scopes=scopes
    )
    body = token_json(issued, realm=realm, scopes=scopes, now=broker.now())
    return Response(body, media_type="application/json", headers=NO_STORE)


def token_json(issued: IssuedToken, *, realm: str, scopes: tuple[str, ...], now: float) -> bytes:
    """The `TokenResponse` of an issued token, encoded directly: validating it through
    `response_model` (which still documents the shape) would cost every request."""
    token = issued.token
    body = {
        "access_token": token.value,
        "token_type": "Bearer",
        "expires_in": max(0, int(token.expires_at - now)),
        "expires_at": iso_time(token.expires_at),
        "realm": realm,
    }
    if scopes:
        body["scope"] = token.scope or rules.scope_label(scopes)
    return orjson.dumps(body)
