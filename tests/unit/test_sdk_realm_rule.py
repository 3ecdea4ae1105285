"""The SDK checks realm names itself (it imports nothing of the server): its rule must stay
the server's, or it would refuse names the broker serves, or send ones it refuses."""

from __future__ import annotations

import pytest

import atlas_broker_client
from broker.core import rules

NAMES = [
    "acme",
    "a",
    "Acme-2.prod_eu",
    "x" * 64,
    "x" * 65,
    "-acme",
    ".acme",
    "_acme",
    "acme/../x",
    "acme\n",
    "acme ",
    "",
    "ac%2Fme",
    "äcme",
]


@pytest.mark.parametrize("name", NAMES)
def test_sdk_and_server_agree_on_realm_names(name: str) -> None:
    """For each name, the SDK accepts it exactly when the broker does."""
    assert rules.is_valid_realm(name) == atlas_broker_client.is_valid_realm(name)
