"""Metric label values come from the configuration only: unknown realms and callers are
counted under `_other`."""

from __future__ import annotations

from broker.adapters.prometheus import OTHER, LabelBounds
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
