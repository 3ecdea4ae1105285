"""`GET /v1/realms/{realm}/token`: a ready Atlas token for an allowed caller."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field

from broker.core import rules
from broker.core.audit import iso_time
from broker.http.deps import CallerDep, app_state_of, request_context
from broker.http.problems import problem_responses

router = APIRouter(tags=["tokens"])
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

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
    request: Request,
    min_ttl: Annotated[
        int, Query(ge=0, le=86400, description="Seconds the token must still be valid.")
    ] = 60,
) -> Response:
    # The broker and the request context are read here rather than injected: on the hot
    # path every dependency FastAPI resolves costs measurably (docs/BENCHMARKS.md).
    broker = app_state_of(request).broker
    issued = await broker.issue(caller, realm, min_ttl=min_ttl, ctx=request_context(request))
    token = issued.token
    # Serialised here rather than validated through `response_model` (which still
    # documents the shape): this is the hot path (issue 7, docs/BENCHMARKS.md).
    body = {
        "access_token": token.value,
        "token_type": "Bearer",
        "expires_in": max(0, int(token.expires_at - broker.now())),
        "expires_at": iso_time(token.expires_at),
        "realm": realm,
    }
    return Response(
        json.dumps(body, separators=(",", ":")),
        media_type="application/json",
        headers=_NO_STORE,
    )
