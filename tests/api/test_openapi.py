"""The committed OpenAPI description matches the app, and documents what callers need."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from broker.http.app import create_app
from broker.http.openapi import SPEC_PATH, render
from broker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PROBLEM_REF = "#/components/schemas/Problem"


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


def effective_security(spec: dict[str, Any], operation: dict[str, Any]) -> Any:
    return operation.get("security", spec["security"])


def test_protected_operations_name_their_security_scheme(spec: dict[str, Any]) -> None:
    """The caller credential is the default; every /v1 operation requires it, health
    endpoints and the discovery document are public."""
    schemes = spec["components"]["securitySchemes"]
    assert {"callerCredential", "callerBasic"} <= set(schemes)
    assert [{"callerCredential": []}] == spec["security"]
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            if path.startswith("/v1/"):
                assert [{"callerCredential": []}] == effective_security(spec, operation), path
            if path in ("/healthz", "/readyz", "/metrics") or path.endswith("openid-configuration"):
                assert [] == effective_security(spec, operation), path


def test_spec_is_valid_openapi(spec: dict[str, Any]) -> None:
    """openapi-spec-validator accepts the description (OpenAPI 3.1)."""
    validate(spec)


def test_operation_ids_are_method_names(spec: dict[str, Any]) -> None:
    """Every operationId is a unique lowerCamelCase name, not FastAPI's path-derived one."""
    ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    assert [] == [name for name in ids if not re.fullmatch(r"[a-z]+(?:[A-Z0-9][a-z0-9]*)*", name)]
    token = spec["paths"]["/v1/realms/{realm}/token"]
    assert ("getToken", "evictToken") == (
        token["get"]["operationId"],
        token["delete"]["operationId"],
    )


def test_problem_responses_use_only_the_problem_media_type(spec: dict[str, Any]) -> None:
    """A problem response is described under application/problem+json with the Problem
    schema, never under application/json as well."""
    wrong = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                content = response.get("content", {})
                if "application/problem+json" not in content:
                    continue
                schema = content["application/problem+json"]["schema"]
                if "application/json" in content or schema["$ref"] != PROBLEM_REF:
                    wrong.append(f"{method.upper()} {path} {status}")
    assert [] == wrong


def test_responses_document_the_headers_callers_act_on(spec: dict[str, Any]) -> None:
    """Every response names X-Request-ID; a 401 names WWW-Authenticate; a 429 Retry-After."""
    token = spec["paths"]["/v1/realms/{realm}/token"]["get"]["responses"]
    assert all("X-Request-ID" in r["headers"] for r in token.values())
    assert "WWW-Authenticate" in token["401"]["headers"]
    assert "Retry-After" in token["429"]["headers"]
    assert {"X-Request-ID", "Retry-After", "WWW-Authenticate"} <= set(spec["components"]["headers"])


def test_servers_are_listed(spec: dict[str, Any]) -> None:
    """The description names its servers, the serving broker first."""
    assert "/" == spec["servers"][0]["url"]
