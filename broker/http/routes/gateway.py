"""`ANY /v1/realms/{realm}/gateway[/{anything}]`: authorization for a proxy in front of the
Atlas API (nginx `auth_request`, Envoy HTTP `ext_authz`; docs/gateway.md).

The proxy passes the caller's request headers; an allowed caller gets 200 with an empty
body and `Authorization: Bearer <token>` for the proxy to put on the upstream request,
anyone else the token route's 401/403 problems. On the hot path, like the token route.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from broker.http.deps import CallerDep, app_state_of, request_context
from broker.http.problems import problem_responses
from broker.http.routes.tokens import RealmPath

router = APIRouter(tags=["gateway"])
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
MIN_TTL = 60  # as the token route's default: the upstream call has a minute at least


async def gateway(realm: RealmPath, caller: CallerDep, request: Request) -> Response:
    """200 with the realm's token in `Authorization` for an allowed caller."""
    broker = app_state_of(request).broker
    issued = await broker.issue(caller, realm, min_ttl=MIN_TTL, ctx=request_context(request))
    return Response(
        status_code=200,
        headers={
            "Authorization": f"Bearer {issued.token.value}",
            "Cache-Control": "no-store",
        },
    )


_RESPONSES = {
    200: {
        "description": "Allowed: the upstream request should carry the `Authorization` "
        "header of this answer (empty body).",
        "headers": {
            "Authorization": {
                "description": "`Bearer <the realm's token>`.",
                "schema": {"type": "string"},
            }
        },
    },
    **problem_responses(401, 403, 404, 429, 502, 503),
}

for _method in METHODS:
    router.add_api_route(
        "/v1/realms/{realm}/gateway",
        gateway,
        methods=[_method],
        name=f"gateway_{_method.lower()}",
        summary=f"Authorize a {_method} request at a gateway (nginx auth_request, Envoy ext_authz)",
        response_class=Response,
        responses=_RESPONSES,
    )
# Any path below, for proxies that append the original URI; the same route undocumented.
router.add_api_route(
    "/v1/realms/{realm}/gateway/{rest:path}",
    gateway,
    methods=list(METHODS),
    name="gateway_below",
    include_in_schema=False,
)
