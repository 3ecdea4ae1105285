"""Refusals that are audited per minute (`auth.failed`) still count in the metrics, by
reason, when their minute's event is written."""

from __future__ import annotations

from broker.adapters.prometheus import BrokerMetrics
from broker.core.audit import AuditEvent


def sample(metrics: BrokerMetrics, line_start: str) -> float:
    for line in metrics.render().decode().splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_each_counted_authentication_failure_is_in_the_metrics() -> None:
    metrics = BrokerMetrics()
    for reasons in ({"api-key-refused": 2, "workload-jwt-refused": 1}, {"api-key-refused": 5}):
        metrics.observe(
            AuditEvent(
                event="auth.failed",
                time=0.0,
                outcome="denied",
                client_ip="10.0.0.7",
                count=sum(reasons.values()),
                reasons=reasons,
            )
        )
    name = "atlas_broker_auth_failures_total"
    assert 7 == sample(metrics, f'{name}{{reason="api-key-refused"}}')
    assert 1 == sample(metrics, f'{name}{{reason="workload-jwt-refused"}}')


def test_every_reason_has_its_series_before_the_first_failure() -> None:
    """A flood of refusals adds no series: they all exist from the start, and a reason
    the broker does not know counts as `_other`."""
    metrics = BrokerMetrics()
    before = {line.split(" ")[0] for line in metrics.render().decode().splitlines()}
    metrics.observe(
        AuditEvent(
            event="auth.failed", time=0.0, outcome="denied", count=2, reasons={"new-kind": 2}
        )
    )
    after = {line.split(" ")[0] for line in metrics.render().decode().splitlines()}
    assert set() == {s for s in after - before if "auth_failures" in s}
    assert 2 == sample(metrics, 'atlas_broker_auth_failures_total{reason="_other"}')
