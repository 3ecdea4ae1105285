"""The committed OpenAPI description matches the app, and documents what callers need."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from broker.http.app import create_app
from broker.http.openapi import SPEC_PATH, render
from broker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    built: dict[str, Any] = create_app(Settings()).openapi()
    return built


def test_committed_spec_matches_the_app(spec: dict[str, Any]) -> None:
    """openapi/openapi.json is what `broker openapi` produces now (run it after API changes)."""
    committed = (ROOT / SPEC_PATH).read_text(encoding="utf-8")
    assert json.loads(committed) == json.loads(render(spec))


def test_every_operation_documents_its_problem_responses(spec: dict[str, Any]) -> None:
    """Each /v1 operation lists its 4xx/5xx responses with the problem+json media type."""
    missing = []
    for path, operations in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            errors = {code: r for code, r in operation["responses"].items() if code[0] in "45"}
            if not errors or any(
                "application/problem+json" not in r.get("content", {})
                for r in errors.values()
                if r.get("description") != "Validation Error"
            ):
                missing.append(f"{method.upper()} {path}")
    assert [] == missing


def test_protected_operations_name_their_security_scheme(spec: dict[str, Any]) -> None:
    """Every /v1 operation requires the caller credential; health endpoints are public."""
    schemes = spec["components"]["securitySchemes"]
    assert {"callerCredential", "callerBasic"} <= set(schemes)
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            if path.startswith("/v1/"):
                assert [{"callerCredential": []}] == operation["security"], path
            if path in ("/healthz", "/readyz", "/metrics"):
                assert "security" not in operation, path
