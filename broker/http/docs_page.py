"""`GET /docs` when `BROKER_DOCS=true`: the API description as one self-contained page.

FastAPI's own `/docs` and `/redoc` load Swagger UI / ReDoc from a CDN: a broker page
that runs third-party script from the internet, in the browser of whoever looks at it, is
not something a credential broker serves. This page is rendered here from the OpenAPI
description, plain HTML with inline style, no script and nothing from elsewhere;
`/openapi.json` is there for richer tools. Both interactive pages are off by default.
"""

from __future__ import annotations

from html import escape
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

_METHODS = ("get", "head", "post", "put", "patch", "delete")
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
    "h2{font-family:monospace;font-size:1rem;margin-top:2rem}"
    ".m{display:inline-block;min-width:4rem;font-weight:bold}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .5rem}"
)


def render(spec: dict[str, Any]) -> str:
    info = spec.get("info", {})
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{escape(str(info.get('title', 'API')))}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{escape(str(info.get('title', '')))} {escape(str(info.get('version', '')))}</h1>",
        f"<p>{escape(str(info.get('summary', '')))}</p>",
        "<p>Machine-readable description: <a href='/openapi.json'>/openapi.json</a>.</p>",
    ]
    for path, operations in spec.get("paths", {}).items():
        for method in _METHODS:
            operation = operations.get(method)
            if operation is not None:
                parts.append(_operation(path, method, operation))
    parts.append("</body></html>")
    return "".join(parts)


def _operation(path: str, method: str, operation: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{escape(str(p.get('name')))}</td><td>{escape(str(p.get('in')))}</td>"
        f"<td>{escape(str(p.get('description', '')))}</td></tr>"
        for p in operation.get("parameters", [])
    )
    params = f"<table><tr><th>parameter</th><th>in</th><th></th></tr>{rows}</table>" if rows else ""
    answers = ", ".join(escape(str(status)) for status in operation.get("responses", {}))
    return (
        f"<h2><span class='m'>{method.upper()}</span>{escape(path)}</h2>"
        f"<p>{escape(str(operation.get('summary', '')))}</p>"
        f"<p>{escape(str(operation.get('description', '')))}</p>"
        f"{params}<p>Responses: {answers}</p>"
    )


def install_docs(app: FastAPI) -> None:
    page: list[str] = []

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        if not page:
            page.append(render(app.openapi()))
        return HTMLResponse(page[0], headers={"Content-Security-Policy": "default-src 'self'"})
