"""`GET /v1/realms/{realm}/token`: a ready Atlas token for an allowed caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from broker.core import rules
from broker.core.audit import iso_time
from broker.http.deps import BrokerDep, CallerDep, ContextDep
from broker.http.problems import problem_responses

router = APIRouter(tags=["tokens"])

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


@router.get(
    "/v1/realms/{realm}/token",
    response_model=TokenResponse,
    summary="Get a ready token for a realm",
    responses=problem_responses(401, 403, 404, 422, 429, 431, 502, 503),
)
async def get_token(
    realm: RealmPath,
    caller: CallerDep,
    broker: BrokerDep,
    ctx: ContextDep,
    response: Response,
    min_ttl: Annotated[
        int, Query(ge=0, le=86400, description="Seconds the token must still be valid.")
    ] = 60,
) -> TokenResponse:
    issued = await broker.issue(caller, realm, min_ttl=min_ttl, ctx=ctx)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    token = issued.token
    return TokenResponse(
        access_token=token.value,
        expires_in=max(0, int(token.expires_at - broker.now())),
        expires_at=iso_time(token.expires_at),
        realm=realm,
    )
