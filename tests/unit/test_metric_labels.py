"""Metric label values come from the configuration only: unknown realms and callers are
counted under `_other`."""

from __future__ import annotations

from broker.adapters.prometheus import OTHER, LabelBounds, StateCollector
from broker.core.models import RealmStatus
from broker.core.policy import Policy


def policy_with(*names: str) -> Policy:
    return Policy.from_mapping(
        {
            "callers": [
                {"name": n, "api_key_sha256": f"{i:064x}", "realms": ["*"]}
                for i, n in enumerate(names)
            ]
        }
    )


def test_a_realm_is_named_only_once_known() -> None:
    """A realm is its own label value only after the broker held its credentials."""
    bounds = LabelBounds(policy=Policy.empty)
    assert OTHER == bounds.realm("acme")
    bounds.know_realm("acme")
    assert ("acme", OTHER, OTHER) == (
        bounds.realm("acme"),
        bounds.realm("globex"),
        bounds.realm(None),
    )


def test_a_caller_is_named_only_while_in_the_policy() -> None:
    """Callers follow the policy in force: a caller removed by a reload becomes `_other`."""
    current = [policy_with("billing", "ledger")]
    bounds = LabelBounds(policy=lambda: current[0])
    assert ("billing", OTHER, OTHER) == (
        bounds.caller("billing"),
        bounds.caller("x"),
        bounds.caller(None),
    )
    current[0] = policy_with("ledger")
    assert (OTHER, "ledger") == (bounds.caller("billing"), bounds.caller("ledger"))


def test_a_scope_set_is_named_only_when_the_policy_allows_it() -> None:
    """A scope set is a label value only if some caller may ask for all of it; any other
    set (a forbidden request's) counts under `_other`."""
    policy = Policy.from_mapping(
        {
            "callers": [
                {"name": "r", "api_key_sha256": "0" * 64, "scopes": ["reports.read", "a"]},
            ]
        }
    )
    bounds = LabelBounds(policy=lambda: policy)
    assert ("reports.read", "a reports.read", OTHER, "") == (
        bounds.scope("reports.read"),
        bounds.scope("a reports.read"),
        bounds.scope("admin reports.read"),
        bounds.scope(None),
    )


def test_degraded_realm_gauge_follows_the_realm_status() -> None:
    """`atlas_broker_realm_degraded` is 1 for a degraded realm and 0 for a healthy one."""
    statuses = {
        name: RealmStatus(name, True, None, None, 1, None, degraded=name == "acme")
        for name in ("acme", "globex")
    }
    collector = StateCollector(
        statuses=lambda: statuses, health=dict, spool_backlog=lambda: 0, now=lambda: 0.0
    )
    (family,) = [m for m in collector.collect() if m.name == "atlas_broker_realm_degraded"]
    assert {"acme": 1.0, "globex": 0.0} == {s.labels["realm"]: s.value for s in family.samples}
