"""problem+json rendering (RFC 9457) for every error the broker returns."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from broker.core.errors import BrokerError

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
_TYPE_BASE = "https://atlas-broker.dev/problems/"


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str = Field(examples=[_TYPE_BASE + "forbidden"])
    title: str = Field(examples=["Caller is not allowed this"])
    status: int = Field(examples=[403])
    detail: str = Field(examples=["caller 'billing-api' may not use realm 'acme'"])
    request_id: str | None = Field(default=None, examples=["5f0c6c1e8a2b4d7e9f10a1b2c3d4e5f6"])


def problem_json(
    *, status: int, slug: str, title: str, detail: str, request_id: str | None
) -> bytes:
    """An RFC 9457 document (the `Problem` model's fields, in its order), encoded."""
    return orjson.dumps(
        {
            "type": _TYPE_BASE + slug,
            "title": title,
            "status": status,
            "detail": detail,
            "request_id": request_id,
        }
    )


def problem_response(
    request: Request,
    *,
    status: int,
    slug: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> Response:
    body = problem_json(
        status=status,
        slug=slug,
        title=title,
        detail=detail,
        request_id=getattr(request.state, "request_id", None),
    )
    return Response(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("path", "query"))
        # The offending input is not echoed: it may be anything, including a secret.
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_problem_handlers(app: FastAPI) -> None:
    async def broker_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BrokerError)
        return problem_response(
            request,
            status=exc.status,
            slug=exc.slug,
            title=exc.title,
            detail=exc.detail,
            headers=exc.headers(),
        )

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return problem_response(
            request,
            status=422,
            slug="invalid-request",
            title="Invalid request",
            detail=_validation_detail(exc),
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers: dict[str, Any] = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the first route matching the path; a resource served
            # by several routes (GET and DELETE of a token) allows all of their methods.
            headers["Allow"] = ", ".join(_allowed_methods(app, request))
        return problem_response(
            request,
            status=exc.status_code,
            slug=f"http-{exc.status_code}",
            title=str(exc.detail),
            detail=str(exc.detail),
            headers=headers,
        )

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        request_id = getattr(request.state, "request_id", None)
        return problem_response(
            request,
            status=500,
            slug="internal-error",
            title="Internal error",
            detail="the broker failed unexpectedly; the request id identifies it in the logs",
            # This handler answers outside the request-id middleware, so it sets the header.
            headers={"X-Request-ID": request_id} if request_id else None,
        )

    app.add_exception_handler(BrokerError, broker_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    methods: set[str] = set()
    # Included routers are one entry of `app.router.routes` each: walk the routes inside.
    for route in iter_route_contexts(app.router.routes):
        match, _ = route.matches({**request.scope, "method": "\x00"})
        if match is Match.PARTIAL:
            methods.update(route.methods or ())
    return sorted(methods)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries so the spec shows each route's problem responses."""
    return {status: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}} for status in statuses}
