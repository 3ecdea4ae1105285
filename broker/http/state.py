"""What the lifespan builds and every request reads: the typed application state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from broker.adapters.policy_file import PolicyFile
from broker.core.broker import TokenBroker
from broker.core.catalog import RealmCatalog
from broker.core.identity import Gatekeeper
from broker.core.ports import AuditTrail
from broker.settings import Settings


class Pingable(Protocol):
    async def ping(self) -> None: ...


@dataclass(frozen=True, slots=True)
class AppState:
    settings: Settings
    broker: TokenBroker
    policy: PolicyFile
    dependencies: dict[str, Pingable]
    gate: Gatekeeper
    audit_trail: AuditTrail
    realms: RealmCatalog
