"""Which realms a caller sees: its own list, the secret source's for "*", and for auditors
every realm with the status this replica holds."""

from __future__ import annotations

from broker.core.catalog import RealmCatalog, unknown_status
from broker.core.models import RealmStatus
from broker.core.policy import Caller
from fakes import FakeSecretSource

CACHED = RealmStatus("acme", True, 2_000_000_000.0, 1_999_999_000.0, 3, None)


def catalog(*names: str, statuses: dict[str, RealmStatus] | None = None) -> RealmCatalog:
    return RealmCatalog(
        secrets=FakeSecretSource.with_realms(*names), statuses=lambda: statuses or {}
    )


async def test_listed_realms_are_the_callers_own() -> None:
    """A caller with explicit realms sees those, whether or not Vault has them."""
    caller = Caller("svc", frozenset({"globex", "acme"}), frozenset())
    assert ["acme", "globex"] == await catalog("acme").usable_by(caller)


async def test_wildcard_sees_the_secret_sources_realms() -> None:
    """A "*" caller sees every realm the secret source lists."""
    caller = Caller("svc", frozenset({"*"}), frozenset())
    assert ["acme", "globex"] == await catalog("globex", "acme").usable_by(caller)


async def test_names_no_request_could_use_are_not_offered() -> None:
    """A secret under realms/ whose name is not a valid realm is left out."""
    caller = Caller("svc", frozenset({"*"}), frozenset())
    assert ["acme"] == await catalog("acme", "not a realm").usable_by(caller)


async def test_statuses_cover_vault_and_known_realms() -> None:
    """Auditors see the secret source's realms and those this replica knows, with status."""
    statuses = await catalog("globex", statuses={"acme": CACHED}).statuses()
    assert [CACHED, unknown_status("globex")] == statuses
