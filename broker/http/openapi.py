"""The OpenAPI description: FastAPI's, plus the security schemes callers use.

`openapi/openapi.json` is the committed copy (`broker openapi` writes it); a test fails
when it and the app's description differ.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

SPEC_PATH = Path("openapi") / "openapi.json"

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
_PUBLIC = {"/healthz", "/readyz", "/metrics"}


def _security_for(path: str) -> list[dict[str, list[str]]] | None:
    if path in _PUBLIC or path.endswith("/.well-known/openid-configuration"):
        return None
    if path.startswith("/auth/realms/"):
        return [{"callerBasic": []}, {}]  # or client_secret_post form fields
    return [{"callerCredential": []}]


def build_openapi(app: FastAPI) -> dict[str, Any]:
    spec = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    spec.setdefault("components", {})["securitySchemes"] = _SCHEMES
    for path, operations in spec.get("paths", {}).items():
        security = _security_for(path)
        if security is None:
            continue
        for operation in operations.values():
            operation["security"] = security
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
