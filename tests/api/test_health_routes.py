"""`/healthz`, `/readyz`, `/metrics` and `/openapi.json` in process: public, and what
each reports; and the route table this layer covers."""

from __future__ import annotations

from broker.http.app import create_app
from broker.settings import Settings
from inprocess import Api

# Every operation of the API, each exercised by a module of this folder.
COVERED = {
    ("get", "/v1/realms/{realm}/token"): "test_token_route, test_upstream_problems",
    ("delete", "/v1/realms/{realm}/token"): "test_admin_routes",
    ("post", "/v1/realms/{realm}/rotate"): "test_admin_routes",
    ("get", "/v1/realms"): "test_realms_and_audit_routes",
    ("get", "/v1/audit"): "test_realms_and_audit_routes",
    ("post", "/auth/realms/{realm}/protocol/openid-connect/token"): "test_dropin_route",
    ("get", "/auth/realms/{realm}/.well-known/openid-configuration"): "test_dropin_route",
    ("get", "/healthz"): "test_health_routes",
    ("get", "/readyz"): "test_health_routes, test_upstream_problems",
    ("get", "/metrics"): "test_health_routes",
    **{
        (m, "/v1/realms/{realm}/gateway"): "test_gateway_route"
        for m in ("delete", "get", "head", "options", "patch", "post", "put")
    },
}

# Operations that arrived without tests in this layer yet (their tests run against broker
# processes in tests/integration); listed so that no further route slips in unnoticed.
NOT_YET_COVERED = {
    *(
        (m, "/v1/realms/{realm}/forward/{path}")
        for m in ("delete", "get", "head", "patch", "post", "put")
    ),
}


def test_every_operation_of_the_app_is_covered_here() -> None:
    """A route added to the app fails this test until this layer has tests for it."""
    spec = create_app(Settings()).openapi()
    operations = {(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert set(COVERED) | NOT_YET_COVERED == operations


async def test_liveness_is_public(api: Api) -> None:
    """/healthz answers 200 alive without a credential."""
    response = await api.client.get("/healthz")
    assert (200, {"status": "alive"}) == (response.status_code, response.json())


async def test_readiness_reports_each_dependency(api: Api) -> None:
    """/readyz is 200 ready, with Vault and the store each reported ok."""
    response = await api.client.get("/readyz")
    assert (200, "ready") == (response.status_code, response.json()["status"])
    assert {"vault": "ok", "redis": "ok"} == response.json()["checks"]


async def test_metrics_count_served_tokens(api: Api) -> None:
    """/metrics is Prometheus text that counts the token requests of the realm."""
    await api.token(api.realm.name, api.keys.everything)
    response = await api.client.get("/metrics")
    assert 200 == response.status_code
    assert response.headers["content-type"].startswith("text/plain")
    assert "atlas_broker_token_requests_total" in response.text


async def test_openapi_description_is_served(api: Api) -> None:
    """/openapi.json describes the API, its token route included."""
    response = await api.client.get("/openapi.json")
    assert "/v1/realms/{realm}/token" in response.json()["paths"]
