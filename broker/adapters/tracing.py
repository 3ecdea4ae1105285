"""OpenTelemetry tracing, opt-in through the standard `OTEL_*` environment.

Off unless `OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`) or an OTLP endpoint
is set (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), and never with
`OTEL_SDK_DISABLED=true`. The SDK reads the rest itself: `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_*`.

When on, a request gets a server span (joining the caller's `traceparent`), and the Vault
reads, IdP fetches and token-store (Redis) calls beneath it get client spans; every log line
written inside a span carries its `trace_id` and `span_id`. When off nothing of the SDK is
imported and no wrapper, middleware or log hook is installed: the hot path is unchanged.
Spans carry realm names and operation names only, never a token, a secret or a key.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.core.models import AccessToken, RealmCredentials
from broker.core.ports import AuditSink, RateLimiter, SecretSource, TokenIssuer, TokenStore

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

T = TypeVar("T")
log = logging.getLogger(__name__)
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_STORE_CALLS = (
    "get",
    "put",
    "evict",
    "acquire_lock",
    "extend_lock",
    "release_lock",
    "lock_held",
    "get_backoff",
    "set_backoff",
    "clear_backoff",
)


def requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the `OTEL_*` environment asks for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return any(environ.get(name) for name in _ENDPOINTS)


class Tracing:
    """One app's tracer provider and the spans the broker makes with it."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self.tracer: Tracer = provider.get_tracer("atlas-token-broker")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Tracing | None:
        if not requested(environ):
            return None
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

        provider = _provider()
        # A comma-separated list, as the specification allows; OTLP when only an endpoint
        # is given.
        names = environ.get("OTEL_TRACES_EXPORTER", "otlp").replace(" ", "").lower().split(",")
        for name in dict.fromkeys(names):
            exporter: SpanExporter
            if name == "console":
                exporter = ConsoleSpanExporter()
            elif name == "otlp":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )

                exporter = OTLPSpanExporter()
            else:
                log.warning("unsupported OTEL_TRACES_EXPORTER ignored", extra={"exporter": name})
                continue
            provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider)

    @classmethod
    def to_exporter(cls, exporter: SpanExporter) -> Tracing:
        """Spans handed to `exporter` as each ends (tests use an in-memory exporter)."""
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        provider = _provider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return cls(provider)

    def shutdown(self) -> None:
        """Export what is buffered and stop."""
        self._provider.shutdown()

    @contextmanager
    def span(self, name: str, **attributes: str | int) -> Iterator[Span]:
        from opentelemetry.trace import SpanKind

        with self.tracer.start_as_current_span(
            name, kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            yield span

    def trace_ids(self) -> dict[str, str]:
        """The current span's ids for a log line, or nothing outside a span."""
        from opentelemetry.trace import get_current_span

        context = get_current_span().get_span_context()
        if not context.is_valid:
            return {}
        return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}

    # -- the ports, wrapped ---------------------------------------------------------------

    def secrets(self, inner: SecretSource) -> SecretSource:
        calls = {"credentials": "vault.credentials", "current_version": "vault.current_version"}
        return cast(SecretSource, _Traced(inner, self, calls))

    def issuer(self, inner: TokenIssuer) -> TokenIssuer:
        return cast(TokenIssuer, _TracedIssuer(inner, self))

    def store(self, inner: TokenStore, *, system: str) -> TokenStore:
        calls = {name: f"{system}.{name}" for name in _STORE_CALLS}
        return cast(TokenStore, _Traced(inner, self, calls))

    def limiter(self, inner: RateLimiter, *, system: str) -> RateLimiter:
        calls = {"acquire": f"{system}.rate_limit"}
        return cast(RateLimiter, _Traced(inner, self, calls, subject="atlas.caller"))

    def audit(self, inner: AuditSink) -> AuditSink:
        return cast(AuditSink, _Traced(inner, self, {"emit": "audit.emit"}))


def _provider() -> TracerProvider:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, which win.
    resource = Resource.create({"service.name": "atlas-token-broker"}).merge(Resource.create())
    return TracerProvider(resource=resource)


class _Traced:
    """Delegates to `inner`; the async methods named in `calls` run inside the span named
    there, which records their first argument (the realm, or `subject`) when it is a name."""

    def __init__(
        self,
        inner: object,
        tracing: Tracing,
        calls: Mapping[str, str],
        *,
        subject: str = "atlas.realm",
    ) -> None:
        self._inner = inner
        self._tracing = tracing
        self._calls = dict(calls)
        self._subject = subject

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        span_name = self._calls.get(name)
        if span_name is None:
            return target
        return self._wrap(span_name, target)

    def _wrap(
        self, span_name: str, call: Callable[..., Awaitable[T]]
    ) -> Callable[..., Awaitable[T]]:
        tracing, subject = self._tracing, self._subject

        @functools.wraps(call)
        async def traced(*args: Any, **kwargs: Any) -> T:
            name = args[0] if args and isinstance(args[0], str) else None
            with tracing.span(span_name, **({subject: name} if name else {})):
                return await call(*args, **kwargs)

        return traced


class _TracedIssuer:
    def __init__(self, inner: TokenIssuer, tracing: Tracing) -> None:
        self._inner = inner
        self._tracing = tracing

    async def fetch(self, credentials: RealmCredentials) -> AccessToken:
        with self._tracing.span("idp.fetch_token", **{"atlas.realm": credentials.realm}):
            return await self._inner.fetch(credentials)

    async def aclose(self) -> None:
        await self._inner.aclose()


class TracingMiddleware:
    """The server span of each HTTP request, named after its route template."""

    def __init__(self, app: ASGIApp, *, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from opentelemetry.propagate import extract
        from opentelemetry.trace import SpanKind, Status, StatusCode

        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in (b"traceparent", b"tracestate")
        }
        method = scope["method"]
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with self.tracing.tracer.start_as_current_span(
            method,
            context=extract(carrier),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
        ) as span:
            try:
                await self.app(scope, receive, send_with_status)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
