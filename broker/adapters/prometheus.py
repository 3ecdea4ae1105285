"""Prometheus metrics: counters fed by the audit events, IdP latency from a timing
decorator, HTTP latency from the middleware, and gauges read at scrape time.

Label values come only from the configuration and the code: a realm is named only once
the broker has held its credentials or served its token, a caller only while it is in the
policy; anything else counts under `_other`, so made-up names cannot grow the series
(a memory and scrape-time attack). Never a token, a secret or a key.

Each app gets its own registry (no module-level metrics), so several apps in one
process (tests) do not share counters. With several workers (`broker serve` with
`BROKER_WORKERS>1` sets `PROMETHEUS_MULTIPROC_DIR`), counters and histograms live in files
every worker writes and every scrape merges, so totals cover all workers; the gauges read
at scrape time (token expiry, dependency health, spool backlog, process) are those of the
worker that answers.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from broker import __version__
from broker.adapters import prometheus_workers
from broker.core.audit import AuditEvent
from broker.core.errors import UpstreamError
from broker.core.models import AccessToken, RealmCredentials, RealmStatus
from broker.core.policy import Policy
from broker.core.ports import AuditSink, TokenIssuer

NAMESPACE = "atlas_broker"
OTHER = "_other"
MULTIPROCESS_ENV = prometheus_workers.MULTIPROCESS_ENV
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class LabelBounds:
    """Which realm and caller names may appear as label values."""

    def __init__(self, *, policy: Callable[[], Policy]) -> None:
        self._realms: set[str] = set()
        self._policy = policy
        self._policy_seen: Policy | None = None
        self._callers: frozenset[str] = frozenset()
        self._scope_sets: set[frozenset[str]] = set()

    def know_realm(self, realm: str) -> None:
        """The broker held this realm's credentials or served its token: a real realm."""
        self._realms.add(realm)

    def realm(self, realm: str | None) -> str:
        return realm if realm in self._realms else OTHER

    def caller(self, name: str | None) -> str:
        self._reload()
        return name if name in self._callers else OTHER

    def scope(self, scope: str | None) -> str:
        """A scope set as a label only when some caller of the policy may ask for all of
        it (`""` is the realm's default token); so the sets are as few as the policy says."""
        self._reload()
        if not scope:
            return ""
        asked = frozenset(scope.split(" "))
        return scope if any(asked <= allowed for allowed in self._scope_sets) else OTHER

    def _reload(self) -> None:
        policy = self._policy()
        if policy is not self._policy_seen:  # reloaded: the names change with it
            self._policy_seen = policy
            self._callers = frozenset(entry.name for entry in policy.spec.callers)
            self._scope_sets = {frozenset(e.scopes) for e in policy.spec.callers if e.scopes}


_NO_POLICY = Policy.empty()


# Why a credential proved no caller (`broker.core.identity`, `broker.http.deps`).
AUTH_FAILURE_REASONS = (
    "api-key-refused",
    "workload-jwt-refused",
    "no-bearer-credential",
    "client-certificate-refused",
    "jwks-unavailable",
    OTHER,
)


class BrokerMetrics:
    def __init__(self, *, policy: Callable[[], Policy] = lambda: _NO_POLICY) -> None:
        # `_created` samples double the series and say nothing an alert needs.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
        self.bounds = LabelBounds(policy=policy)
        values = CollectorRegistry(auto_describe=True)
        shared_dir = os.environ.get(MULTIPROCESS_ENV)
        if shared_dir:
            # `values` then only feeds the shared files; rendering it would show this
            # worker's share alone.
            self.registry = CollectorRegistry()
            MultiProcessCollector(self.registry, path=shared_dir)  # type: ignore[no-untyped-call]
        else:
            self.registry = values
        ProcessCollector(registry=self.registry)
        self.registry.register(_BuildInfo())
        self.requests = self._counter(
            values,
            "token_requests",
            "Token requests by realm, outcome (issued or the refusal's reason) and source.",
            ["realm", "outcome", "source"],
        )
        self.scoped_requests = self._counter(
            values,
            "scoped_token_requests",
            "Token requests asking for a scope set (`?scope=`), by realm, scope set (only "
            "sets the policy allows) and outcome (issued or the refusal's reason).",
            ["realm", "scope", "outcome"],
        )
        self.caller_requests = self._counter(
            values,
            "caller_token_requests",
            "Token requests by caller (as named in the policy) and outcome (issued, denied).",
            ["caller", "outcome"],
        )
        self.idp_latency = Histogram(
            "idp_request_seconds",
            "Latency of token requests to the IdP.",
            ["realm"],
            namespace=NAMESPACE,
            registry=values,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.idp_errors = self._counter(
            values, "idp_errors", "Failed token requests to the IdP by reason.", ["realm", "reason"]
        )
        self.fetches = self._counter(
            values,
            "token_fetches",
            "Tokens obtained from the IdP (first fetches and refreshes), and failures.",
            ["realm", "result"],
        )
        self.audit_events = self._counter(
            values, "audit_events", "Audit events recorded, by event type.", ["event"]
        )
        self.auth_failures = self._counter(
            values,
            "auth_failures",
            "Requests whose credential proved no caller, by reason; counted when each "
            "minute's auth.failed audit event is written.",
            ["reason"],
        )
        # Every reason's series exists from the start (a flood of refusals adds none).
        for reason in AUTH_FAILURE_REASONS:
            self.auth_failures.labels(reason)
        # Counted refusals arrive once a minute: their series exist from the start, so the
        # set of series does not change when the first one is written.
        for aggregate in ("auth.failed", "rate_limit.exceeded"):
            self.audit_events.labels(aggregate)
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "Time to answer HTTP requests, by route template and status class (2xx, 4xx...).",
            ["route", "status"],
            namespace=NAMESPACE,
            registry=values,
            buckets=_HTTP_BUCKETS,
        )
        # Label children by their values: `.labels()` validates and locks on every call,
        # and these run on every request.
        self._counters: dict[tuple[object, ...], Counter] = {}
        self._histograms: dict[tuple[object, ...], Histogram] = {}

    @staticmethod
    def _counter(
        registry: CollectorRegistry, name: str, documentation: str, labels: list[str]
    ) -> Counter:
        return Counter(name, documentation, labels, namespace=NAMESPACE, registry=registry)

    def count(self, metric: Counter, *values: str) -> Counter:
        key = (metric, *values)
        child = self._counters.get(key)
        if child is None:
            child = self._counters[key] = metric.labels(*values)
        return child

    def timer(self, metric: Histogram, *values: str) -> Histogram:
        key = (metric, *values)
        child = self._histograms.get(key)
        if child is None:
            child = self._histograms[key] = metric.labels(*values)
        return child

    def observe(self, event: AuditEvent) -> None:
        kind = event.event
        if event.realm and kind in ("token.issued", "token.fetched"):
            self.bounds.know_realm(event.realm)
        realm = self.bounds.realm(event.realm)
        self.count(self.audit_events, kind).inc()
        if event.scope and kind in ("token.issued", "token.denied"):
            outcome = "issued" if kind == "token.issued" else event.reason or "denied"
            scope = self.bounds.scope(event.scope)
            self.count(self.scoped_requests, realm, scope, outcome).inc()
        if kind == "token.issued":
            self.count(self.requests, realm, "issued", event.source or "").inc()
            self.count(self.caller_requests, self.bounds.caller(event.caller), "issued").inc()
        elif kind == "token.denied":
            self.count(self.requests, realm, event.reason or "denied", "none").inc()
            self.count(self.caller_requests, self.bounds.caller(event.caller), "denied").inc()
        elif kind == "token.fetched":
            self.count(self.fetches, realm, "success").inc()
        elif kind == "token.fetch_failed":
            self.count(self.fetches, realm, "failure").inc()
        elif kind == "auth.failed":
            for reason, count in (event.reasons or {}).items():
                known = reason if reason in AUTH_FAILURE_REASONS else OTHER
                self.count(self.auth_failures, known).inc(count)

    def observe_http(self, route: str, status: int, seconds: float) -> None:
        """One answered request; `route` is the matched route's template (or `_other`)."""
        self.timer(self.http_duration, route, f"{status // 100}xx").observe(seconds)

    def add_gauges(self, collector: Collector) -> None:
        self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _BuildInfo(Collector):
    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily(
            f"{NAMESPACE}_build_info",
            "Always 1; the labels name the running version and Python.",
            labels=["version", "python"],
        )
        info.add_metric([__version__, platform.python_version()], 1.0)
        yield info


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
        realm = credentials.realm
        self._metrics.bounds.know_realm(realm)  # its credentials are in hand
        started = time.perf_counter()
        try:
            return await self._inner.fetch(credentials)
        except UpstreamError as exc:
            reason = getattr(exc, "reason", None) or exc.slug
            self._metrics.count(self._metrics.idp_errors, realm, reason).inc()
            raise
        finally:
            latency = self._metrics.timer(self._metrics.idp_latency, realm)
            latency.observe(time.perf_counter() - started)

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
        degraded = GaugeMetricFamily(
            f"{NAMESPACE}_realm_degraded",
            "1 while the IdP refuses a realm's newer secret version and the realm serves "
            "with the last one that worked, else 0.",
            labels=["realm"],
        )
        for realm, status in self._statuses().items():
            degraded.add_metric([realm], 1.0 if status.degraded else 0.0)
        yield degraded
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
