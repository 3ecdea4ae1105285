"""Tracing: opt-in through OTEL_*; a token request is one trace through Vault, the IdP and
Redis, and log lines written inside it carry its trace id."""

from __future__ import annotations

import json
import re

import httpx
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.types import Receive, Scope, Send

from broker.adapters.tracing import Tracing, TracingMiddleware, requested
from broker.http.app import create_app
from broker.settings import Settings
from polling import wait_for
from stack import Stack, bearer

TOKEN_ROUTE = "GET /v1/realms/{realm}/token"


def in_process_settings(stack: Stack) -> Settings:
    env = stack.broker_env()
    return Settings(**{name.removeprefix("BROKER_").lower(): value for name, value in env.items()})


async def test_a_first_token_request_is_one_trace_through_vault_the_idp_and_redis(
    stack: Stack,
) -> None:
    """The request's server span is the ancestor of a Vault read, an IdP fetch and the
    Redis store calls, all in one trace, and no span attribute holds the token."""
    realm = stack.new_realm()
    exporter = InMemorySpanExporter()
    app = create_app(in_process_settings(stack), tracing=Tracing.to_exporter(exporter))
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
            scope["state"] = dict(state or {})  # what a server hands on from the lifespan
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://broker") as client:
            response = await client.get(
                f"/v1/realms/{realm.name}/token", headers=bearer(stack.keys.everything)
            )
    assert 200 == response.status_code
    stack.served_tokens(response)
    spans = exporter.get_finished_spans()
    (request,) = [span for span in spans if span.name == TOKEN_ROUTE]
    parents = {span.context.span_id: span.parent.span_id if span.parent else None for span in spans}

    def under_request(span_id: int | None) -> bool:
        while span_id is not None:
            if span_id == request.context.span_id:
                return True
            span_id = parents.get(span_id)
        return False

    traced = {
        span.name
        for span in spans
        if span.context.trace_id == request.context.trace_id and under_request(span.context.span_id)
    }
    assert {
        "vault.credentials",
        "idp.fetch_token",
        "redis.get",
        "redis.put",
        "audit.emit",
    } <= traced
    assert 200 == request.attributes["http.response.status_code"]
    attributes = json.dumps([dict(span.attributes or {}) for span in spans])
    assert [] == stack.leak_watch.found_in(attributes)


def test_log_lines_inside_a_request_carry_its_trace_id(stack: Stack) -> None:
    """With OTEL_TRACES_EXPORTER=console, every access log line carries a trace id, the
    caller's (`traceparent`) for its request, which the exporter reports as well."""
    broker = stack.start_broker(
        OTEL_TRACES_EXPORTER="console", OTEL_BSP_SCHEDULE_DELAY="100", OTEL_SERVICE_NAME="t"
    )
    headers = {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"}
    assert 200 == httpx.get(f"{broker.url}/healthz", headers=headers).status_code
    log = broker.process.log_path

    def exported() -> bool:
        return f'"trace_id": "0x{"ab" * 16}"' in log.read_text()

    wait_for(exported, timeout=30, message="the console exporter printed no span of the request")
    access = [
        json.loads(line)
        for line in log.read_text().splitlines()
        if line.startswith("{") and "GET /healthz" in line and '"level"' in line
    ]
    # The start-up probe's requests are traces of their own; each line has its trace id.
    assert [] == [entry for entry in access if "trace_id" not in entry]
    assert "ab" * 16 in {entry["trace_id"] for entry in access}


def test_tracing_is_off_without_otel_settings(stack: Stack) -> None:
    """Without OTEL_* variables no tracing middleware is installed and log lines carry no
    trace id."""
    assert requested({}) is False
    assert requested({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}) is False
    app = create_app(Settings())
    assert [] == [m for m in app.user_middleware if m.cls is TracingMiddleware]
    broker = stack.start_broker()
    assert 200 == httpx.get(f"{broker.url}/healthz").status_code
    assert None is re.search(r'"trace_id"', broker.process.log_path.read_text())
