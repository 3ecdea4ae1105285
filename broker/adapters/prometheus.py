"""Prometheus metrics: counters fed by the audit events, IdP latency from a timing
decorator, and gauges read at scrape time. Labels are realm, source, outcome and
reason names only: never a token, a secret or a key.

Each app gets its own registry (no module-level metrics), so several apps in one
process — tests, workers — do not share counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from broker.core.audit import AuditEvent
from broker.core.errors import UpstreamError
from broker.core.models import AccessToken, RealmCredentials, RealmStatus
from broker.core.ports import AuditSink, TokenIssuer

NAMESPACE = "atlas_broker"


class BrokerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "token_requests",
            "Token requests by realm, outcome (issued or the refusal's reason) and source.",
            ["realm", "outcome", "source"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.idp_latency = Histogram(
            "idp_request_seconds",
            "Latency of token requests to the IdP.",
            ["realm"],
            namespace=NAMESPACE,
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.idp_errors = Counter(
            "idp_errors",
            "Failed token requests to the IdP by reason.",
            ["realm", "reason"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.fetches = Counter(
            "token_fetches",
            "Tokens obtained from the IdP (first fetches and refreshes), and failures.",
            ["realm", "result"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.audit_events = Counter(
            "audit_events",
            "Audit events recorded, by event type.",
            ["event"],
            namespace=NAMESPACE,
            registry=self.registry,
        )

    def observe(self, event: AuditEvent) -> None:
        realm = event.realm or ""
        self.audit_events.labels(event.event).inc()
        if event.event == "token.issued":
            self.requests.labels(realm, "issued", event.source or "").inc()
        elif event.event == "token.denied":
            self.requests.labels(realm, event.reason or "denied", "none").inc()
        elif event.event == "token.fetched":
            self.fetches.labels(realm, "success").inc()
        elif event.event == "token.fetch_failed":
            self.fetches.labels(realm, "failure").inc()

    def add_gauges(self, collector: Collector) -> None:
        self.registry.register(collector)


class MetricsAuditSink:
    """Counts every audit event on its way to the real sink."""

    def __init__(self, inner: AuditSink, metrics: BrokerMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def emit(self, event: AuditEvent) -> None:
        await self._inner.emit(event)
        self._metrics.observe(event)

    async def aclose(self) -> None:
        await self._inner.aclose()


class TimedTokenIssuer:
    """Times each IdP request and counts its failures by reason."""

    def __init__(self, inner: TokenIssuer, metrics: BrokerMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def fetch(self, credentials: RealmCredentials) -> AccessToken:
        started = time.perf_counter()
        try:
            return await self._inner.fetch(credentials)
        except UpstreamError as exc:
            reason = getattr(exc, "reason", None) or exc.slug
            self._metrics.idp_errors.labels(credentials.realm, reason).inc()
            raise
        finally:
            self._metrics.idp_latency.labels(credentials.realm).observe(
                time.perf_counter() - started
            )

    async def aclose(self) -> None:
        await self._inner.aclose()


class StateCollector(Collector):
    """Gauges read when Prometheus scrapes: each cached token's time to expiry, the
    dependencies' last known health, and the audit spool's backlog."""

    def __init__(
        self,
        *,
        statuses: Callable[[], Mapping[str, RealmStatus]],
        health: Callable[[], Mapping[str, bool]],
        spool_backlog: Callable[[], int],
        now: Callable[[], float],
    ) -> None:
        self._statuses = statuses
        self._health = health
        self._backlog = spool_backlog
        self._now = now

    def collect(self) -> Iterable[Metric]:
        expiry = GaugeMetricFamily(
            f"{NAMESPACE}_token_expiry_seconds",
            "Seconds until the cached token of each realm expires.",
            labels=["realm"],
        )
        now = self._now()
        for realm, status in self._statuses().items():
            if status.cached and status.expires_at is not None:
                expiry.add_metric([realm], status.expires_at - now)
        yield expiry
        up = GaugeMetricFamily(
            f"{NAMESPACE}_dependency_up",
            "Whether each dependency answered its last health check (1) or not (0).",
            labels=["dependency"],
        )
        for name, healthy in self._health().items():
            up.add_metric([name], 1.0 if healthy else 0.0)
        yield up
        yield GaugeMetricFamily(
            f"{NAMESPACE}_audit_spool_backlog_bytes",
            "Audit events waiting in the local spool for Redis to return, in bytes.",
            value=float(self._backlog()),
        )
