"""The OpenAPI description: FastAPI's, finished for code generators.

FastAPI's description is adjusted after generation: operation ids a client generator can
turn into method names (`getToken`, not `get_token_v1_realms__realm__token_get`), problem
responses under `application/problem+json` only (what the broker sends, RFC 9457), the
response headers callers act on, the servers, and the security schemes with the caller
credential as the default.

`openapi/openapi.json` is the committed copy (`broker openapi` writes it); a test fails
when it and the app's description differ.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from broker.http.problems import PROBLEM_MEDIA_TYPE

SPEC_PATH = Path("openapi") / "openapi.json"

# Route (endpoint function) name -> operationId, where the function's name alone would be
# a poor method name in generated clients. Other routes get their name in camelCase.
_OPERATION_IDS = {
    "evict": "evictToken",
    "token": "oauth2Token",
    "discovery": "getOpenIdConfiguration",
    "rotate": "rotateRealmCredentials",
    "read_audit": "listAuditEvents",
    "healthz": "getLiveness",
    "readyz": "getReadiness",
    "metrics": "getMetrics",
}

_SCHEMES: dict[str, Any] = {
    "callerCredential": {
        "type": "http",
        "scheme": "bearer",
        "description": "The caller's API key, or a workload JWT from an issuer in the policy.",
    },
    "callerBasic": {
        "type": "http",
        "scheme": "basic",
        "description": "The caller's name and API key (the drop-in OAuth2 token endpoint).",
    },
}
_DEFAULT_SECURITY: list[dict[str, list[str]]] = [{"callerCredential": []}]
_PUBLIC = {"/healthz", "/readyz", "/metrics"}

_HEADERS: dict[str, Any] = {
    "X-Request-ID": {
        "description": "The request's id: the caller's `X-Request-ID` when well-formed, else "
        "a new one. Log lines and audit events carry it.",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "WWW-Authenticate": {
        "description": "The authentication scheme the broker expects (RFC 9110).",
        "schema": {"type": "string"},
    },
}
# Which responses carry which header besides X-Request-ID (on all of them).
_STATUS_HEADERS = {"401": ["WWW-Authenticate"], "429": ["Retry-After"], "503": ["Retry-After"]}
# A min_ttl no token can meet within the forced-fetch window says when to try again.
_OPERATION_HEADERS = {("getToken", "422"): ["Retry-After"]}

_SERVERS = [
    {"url": "/", "description": "The broker that served this description."},
    {"url": "http://127.0.0.1:8080", "description": "A development stack (`broker dev`)."},
]


def operation_id(route: APIRoute) -> str:
    """The route's operationId (FastAPI's `generate_unique_id_function`)."""
    return _OPERATION_IDS.get(route.name) or re.sub(
        r"_([a-z0-9])", lambda m: m.group(1).upper(), route.name
    )


def _security_for(path: str) -> list[dict[str, list[str]]]:
    if path in _PUBLIC or path.endswith("/.well-known/openid-configuration"):
        return []
    if path.startswith("/auth/realms/"):
        return [{"callerBasic": []}, {}]  # or client_secret_post form fields
    return _DEFAULT_SECURITY


def _finish_response(operation: str, status: str, response: dict[str, Any]) -> None:
    content = response.get("content", {})
    schema = content.get("application/json", {}).get("schema", {})
    validation = schema.get("$ref", "").endswith("/HTTPValidationError")
    if PROBLEM_MEDIA_TYPE in content or validation:
        # FastAPI puts the model under application/json; the broker answers problem+json
        # only, the 422 of request validation included. (The OAuth2 endpoints' RFC 6749
        # errors are application/json and stay so.)
        content.pop("application/json", None)
        content[PROBLEM_MEDIA_TYPE] = {"schema": {"$ref": "#/components/schemas/Problem"}}
        if validation:
            response["description"] = "The request is invalid (a path, query or body field)."
    names = ["X-Request-ID"]
    if status == "401" or PROBLEM_MEDIA_TYPE in content:  # /readyz's 503 has no Retry-After
        names += _STATUS_HEADERS.get(status, []) + _OPERATION_HEADERS.get((operation, status), [])
    response["headers"] = {name: {"$ref": f"#/components/headers/{name}"} for name in names}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    spec = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
        servers=_SERVERS,
    )
    components = spec.setdefault("components", {})
    components["securitySchemes"] = _SCHEMES
    components["headers"] = _HEADERS
    spec["security"] = _DEFAULT_SECURITY
    for path, operations in spec.get("paths", {}).items():
        security = _security_for(path)
        for operation in operations.values():
            if security != _DEFAULT_SECURITY:
                operation["security"] = security
            for status, response in operation["responses"].items():
                _finish_response(operation["operationId"], status, response)
    schemas = components.get("schemas", {})
    # Replaced by Problem above; nothing refers to them any more.
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    return spec


def install_openapi(app: FastAPI) -> None:
    cached: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not cached:
            cached.update(build_openapi(app))
        return cached

    app.openapi = openapi  # type: ignore[method-assign]


def render(spec: dict[str, Any]) -> str:
    return json.dumps(spec, indent=2, ensure_ascii=False) + "\n"
