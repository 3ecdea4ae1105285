"""`/v1/realms/{realm}/forward/{path}`: a caller's request sent on to the Atlas API with
the realm's token, which the caller never sees (`broker.core.forwarding`)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import StreamingResponse

from broker.core.errors import ApiNotConfigured, ForwardPathRefused
from broker.core.forwarding import IncomingRequest
from broker.core.models import ApiResponse
from broker.core.policy import Caller
from broker.http.deps import CallerDep, app_state_of, request_context
from broker.http.problems import problem_responses
from broker.http.routes.tokens import RealmPath

router = APIRouter(tags=["forward"])
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
BUFFERED_LIMIT = 64 << 10  # answers up to this size are read whole, bigger ones stream

ForwardPath = Annotated[
    str,
    Path(
        description="The API path below the realm's API base URL, percent-encoded; "
        "encoded slashes, dot segments, backslashes and '@' are refused.",
        examples=["api/v1/accountreports"],
    ),
]


async def forward(
    realm: RealmPath, path: ForwardPath, caller: CallerDep, request: Request
) -> Response:
    """Send the request on to `{api_url}/{path}?{query}` with the realm's token; the
    API's status, headers and body come back as they are."""
    return await answer(request, realm, caller)


async def answer(request: Request, realm: str, caller: Caller) -> Response:
    """The API's answer to an authenticated caller's forward request, as the response to
    send (the plain-ASGI route in `broker.http.hot_routes` and the FastAPI one share it).
    Refusals and failures raise BrokerError before anything is sent."""
    forwarder = app_state_of(request).forwarder
    if forwarder is None:  # an app state built without one (never by the app factory)
        raise ApiNotConfigured("the forward proxy is not set up on this broker")
    response = await forwarder.forward(
        caller, realm, _incoming(request, realm), ctx=request_context(request)
    )
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in response.headers
    ]
    if _small(headers):
        # Read whole: the connection goes back to the pool at once, and no streaming
        # task is started for an answer that arrived in one piece.
        try:
            content = b"".join([chunk async for chunk in response.body])
        finally:
            await response.aclose()
        result = Response(content, status_code=response.status)
    else:
        result = StreamingResponse(_body(response), status_code=response.status)
    result.raw_headers = headers
    return result


def _small(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the API's answer declares a length up to BUFFERED_LIMIT."""
    lengths = [value for name, value in headers if name == b"content-length"]
    if len(lengths) != 1 or any(name == b"transfer-encoding" for name, _ in headers):
        return False
    return lengths[0].isdigit() and int(lengths[0]) <= BUFFERED_LIMIT


def _incoming(request: Request, realm: str) -> IncomingRequest:
    # The path as it was on the wire: the routed one is already percent-decoded, and an
    # encoded slash must be seen to be refused.
    raw = request.scope.get("raw_path") or request.url.path.encode()
    raw_path = raw.decode("latin-1")
    prefix = f"/v1/realms/{realm}/forward/"
    if not raw_path.startswith(prefix):
        raise ForwardPathRefused("the forward path must follow /v1/realms/{realm}/forward/")
    length = request.headers.get("content-length")
    has_body = length not in (None, "0") or "transfer-encoding" in request.headers
    return IncomingRequest(
        method=request.method,
        raw_path=raw_path[len(prefix) :],
        raw_query=request.scope.get("query_string", b"").decode("latin-1"),
        headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw],
        body=_request_body(request) if has_body else None,
        content_length=int(length) if length is not None and length.isdigit() else None,
    )


async def _request_body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


async def _body(response: ApiResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.body:
            yield chunk
    finally:
        await response.aclose()  # the connection goes back to the pool


_FORWARD_PATH = re.compile(r"^/v1/realms/[^/]+/forward/")


def body_limit(*, forward_max: int, other: int) -> Callable[[str], int]:
    """The request body limit by path: BROKER_FORWARD_MAX_BODY on the forward route,
    `other` (BROKER_MAX_BODY_BYTES) everywhere else."""

    def limit(path: str) -> int:
        return forward_max if _FORWARD_PATH.match(path) else other

    return limit


for _method in METHODS:
    router.add_api_route(
        "/v1/realms/{realm}/forward/{path:path}",
        forward,
        methods=[_method],
        name=f"forward_{_method.lower()}",
        summary=f"Forward a {_method} request to the Atlas API with the realm's token",
        response_class=Response,
        responses={
            200: {"description": "The API's answer, as the API sent it."},
            "default": {"description": "The API's answer with another status, as sent."},
            **problem_responses(400, 401, 403, 404, 413, 429, 502, 503, 504),
        },
    )
