"""The framework limits beside the broker's hot path: one route answering exactly the bytes
of a cached-token response, with nothing else to do.

    python -m bench.limit_apps raw|fastapi --port N --body-file F [--header 'name: value']...

*raw*: a bare ASGI callable that sends the same two messages for every request, the
fastest a Python ASGI app can answer on one uvicorn worker. *fastapi*: one FastAPI route
(`GET /v1/realms/{realm}/token`) returning the same bytes as a `Response`: what the
framework costs before any broker code runs.

Both serve on one uvicorn worker with the server settings the broker uses (httptools,
uvloop, no `server` header, no proxy headers, no log configuration) and no access log.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

KINDS = ("raw", "fastapi")
TOKEN_ROUTE = "/v1/realms/{realm}/token"


def parse_header(text: str) -> tuple[str, str]:
    """`'Name: value'` → `('name', 'value')` (lower-case name, as ASGI carries it)."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"a header is 'name: value', not {text!r}")
    return name.strip().lower(), value.strip()


def raw_app(body: bytes, headers: Sequence[tuple[str, str]]) -> ASGIApp:
    """Every HTTP request answered 200 with `body` and `headers` (plus content-length)."""
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [
            *((name.encode(), value.encode()) for name, value in headers),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    message = {"type": "http.response.body", "body": body}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send(start)
        await send(message)

    return app


def fastapi_app(body: bytes, headers: Sequence[tuple[str, str]]) -> ASGIApp:
    """One FastAPI route, the token route's path, returning `body` and `headers`."""
    from fastapi import FastAPI, Response

    media_type = dict(headers).get("content-type", "application/json")
    extra = {name: value for name, value in headers if name != "content-type"}
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get(TOKEN_ROUTE)
    async def token(realm: str) -> Response:
        return Response(content=body, media_type=media_type, headers=extra)

    return app


def build(kind: str, body: bytes, headers: Sequence[tuple[str, str]]) -> ASGIApp:
    if kind == "raw":
        return raw_app(body, headers)
    if kind == "fastapi":
        return fastapi_app(body, headers)
    raise ValueError(f"unknown app {kind!r}: one of {', '.join(KINDS)}")


def server_config(app: ASGIApp, *, host: str, port: int) -> uvicorn.Config:
    """The broker listener's uvicorn settings, for one worker, without the access log."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        workers=1,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.limit_apps", description=__doc__)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--body-file", type=Path, required=True, help="the response body")
    parser.add_argument(
        "--header",
        type=parse_header,
        action="append",
        default=[],
        help="a response header, 'name: value' (repeatable; content-length is added)",
    )
    args = parser.parse_args(argv)
    app = build(args.kind, args.body_file.read_bytes(), args.header)
    uvicorn.Server(server_config(app, host=args.host, port=args.port)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
