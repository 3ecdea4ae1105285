"""The token, gateway and forward routes as plain ASGI, ahead of FastAPI's router.

They are the broker's hot path: a caller asks for its token (or, behind a gateway, for
authorization, or through the forward proxy, for the API call itself) on every request.
FastAPI's per-request machinery (dependency solving, parameter validation, a wrapper per
layer) costs several times the broker's own work (docs/BENCHMARKS.md), so these routes
are answered here, with the same authentication (`deps.admit_caller`), the same
problem+json documents and the same headers. The request id, the source address, size
limits, metrics and tracing come from the middleware around this one, as for every route.

Only the plain, valid form of a request is taken here: a valid realm name, and for the
token route a GET whose `min_ttl` is a plain number in range. Anything else (an invalid
realm, `min_ttl=1e3`, a HEAD) goes on to the FastAPI routes, which remain the reference:
they answer the odd cases, validate exactly, and describe the routes in the OpenAPI
document. The forward route's work is `broker.http.routes.forward.answer`, which its
FastAPI route shares.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl

from fastapi.routing import iter_route_contexts
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.core import rules
from broker.core.context import RequestContext
from broker.core.errors import BrokerError, InvalidRequest
from broker.core.policy import Caller
from broker.http.deps import admit_caller, context_of, is_token_request
from broker.http.problems import PROBLEM_MEDIA_TYPE, problem_json
from broker.http.routes import forward, gateway, tokens
from broker.http.state import AppState

_PREFIX = "/v1/realms/"
# What FastAPI would accept for `min_ttl` (0..86400), in its plainest spelling only.
_PLAIN_MIN_TTL = re.compile(r"0|[1-9][0-9]{0,4}")
_MAX_MIN_TTL = 86400
_MAX_SCOPE = 2048
_GATEWAY_METHODS = frozenset(gateway.METHODS)
_FORWARD_METHODS = frozenset(forward.METHODS)

_JSON = [(b"content-type", b"application/json")]
_NO_STORE = [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]
_PROBLEM = [(b"content-type", PROBLEM_MEDIA_TYPE.encode())]


class HotRoutes:
    """Answers plain token, gateway and forward requests; passes every other request on."""

    def __init__(self, app: ASGIApp, *, routes: Iterable[BaseRoute]) -> None:
        self.app = app
        # The FastAPI routes these requests would have matched: left in the scope, as
        # Starlette's router does, for the metrics and tracing middleware (route template).
        by_path = {
            path: context.original_route
            for context in iter_route_contexts(list(routes))
            if (path := context.path) is not None
        }
        self._token_route = by_path["/v1/realms/{realm}/token"]
        self._gateway_route = by_path["/v1/realms/{realm}/gateway"]
        self._gateway_below = by_path["/v1/realms/{realm}/gateway/{rest:path}"]
        self._forward_route = by_path["/v1/realms/{realm}/forward/{path:path}"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(_PREFIX):
            realm, _, rest = scope["path"][len(_PREFIX) :].partition("/")
            if rules.is_valid_realm(realm):
                if rest == "token" and scope["method"] == "GET":
                    ask = token_query(scope["query_string"])
                    if ask is not None:
                        scope["route"] = self._token_route
                        await _token(scope, send, realm, *ask)
                        return
                elif (rest == "gateway" or rest.startswith("gateway/")) and scope[
                    "method"
                ] in _GATEWAY_METHODS:
                    scope["route"] = (
                        self._gateway_route if rest == "gateway" else self._gateway_below
                    )
                    await _gateway(scope, send, realm)
                    return
                elif rest.startswith("forward/") and scope["method"] in _FORWARD_METHODS:
                    scope["route"] = self._forward_route
                    await _forward(scope, receive, send, realm)
                    return
        await self.app(scope, receive, send)


def token_query(query: bytes) -> tuple[int, str | None] | None:
    """`min_ttl` and `scope` of a token request, or None for anything but their plain form
    (FastAPI decides those). The last of repeated parameters counts, as with FastAPI."""
    if not query:
        return tokens.DEFAULT_MIN_TTL, None
    params = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True))
    min_ttl = tokens.DEFAULT_MIN_TTL
    if (raw := params.get("min_ttl")) is not None:
        if _PLAIN_MIN_TTL.fullmatch(raw) is None or int(raw) > _MAX_MIN_TTL:
            return None
        min_ttl = int(raw)
    scope = params.get("scope")
    if scope is not None and len(scope) > _MAX_SCOPE:
        return None
    return min_ttl, scope


async def _token(scope: Scope, send: Send, realm: str, min_ttl: int, raw_scope: str | None) -> None:
    try:
        state, caller, ctx = await _admit(scope, realm, token_request=True)
        try:
            scopes = rules.parse_scopes(raw_scope)
        except ValueError as exc:
            raise InvalidRequest(f"scope: {exc}") from None
        broker = state.broker
        issued = await broker.issue(caller, realm, min_ttl=min_ttl, ctx=ctx, scopes=scopes)
    except BrokerError as exc:
        await _problem(scope, send, exc)
        return
    body = tokens.token_json(issued, realm=realm, scopes=scopes, now=broker.now())
    await _answer(send, 200, [*_JSON, *_NO_STORE], body)


async def _gateway(scope: Scope, send: Send, realm: str) -> None:
    try:
        state, caller, ctx = await _admit(scope, realm, token_request=False)
        issued = await state.broker.issue(caller, realm, min_ttl=gateway.MIN_TTL, ctx=ctx)
    except BrokerError as exc:
        await _problem(scope, send, exc)
        return
    headers = [
        (b"authorization", b"Bearer " + issued.token.value.encode()),
        (b"cache-control", b"no-store"),
    ]
    await _answer(send, 200, headers, b"")


async def _forward(scope: Scope, receive: Receive, send: Send, realm: str) -> None:
    try:
        token_request = is_token_request(scope["path"], scope["method"])
        _, caller, _ = await _admit(scope, realm, token_request=token_request)
        response = await forward.answer(Request(scope, receive), realm, caller)
    except BrokerError as exc:
        await _problem(scope, send, exc)
        return
    await response(scope, receive, send)


async def _admit(
    scope: Scope, realm: str, *, token_request: bool
) -> tuple[AppState, Caller, RequestContext]:
    state: AppState = scope["state"]["app"]
    ctx = context_of(scope)
    caller = await admit_caller(
        state.gate,
        authorization=Headers(scope=scope).get("authorization"),
        scope=scope,
        ctx=ctx,
        realm=realm,
        token_request=token_request,
    )
    return state, caller, ctx


async def _problem(scope: Scope, send: Send, exc: BrokerError) -> None:
    body = problem_json(
        status=exc.status,
        slug=exc.slug,
        title=exc.title,
        detail=exc.detail,
        request_id=(scope.get("state") or {}).get("request_id"),
    )
    extra = [(name.lower().encode(), value.encode()) for name, value in exc.headers().items()]
    await _answer(send, exc.status, [*_PROBLEM, *extra], body)


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
