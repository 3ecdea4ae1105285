"""What the lifespan builds and every request reads: the typed application state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from broker.adapters.policy_file import PolicyFile
from broker.adapters.prometheus import BrokerMetrics
from broker.core.broker import TokenBroker
from broker.core.catalog import RealmCatalog
from broker.core.forwarding import Forwarder
from broker.core.identity import Gatekeeper
from broker.core.ports import AuditTrail
from broker.core.supervisor import TaskSupervisor
from broker.settings import Settings


class Pingable(Protocol):
    async def ping(self) -> None: ...


if TYPE_CHECKING:
    from broker.http.health_monitor import DependencyMonitor


@dataclass(frozen=True, slots=True)
class AppState:
    settings: Settings
    broker: TokenBroker
    policy: PolicyFile
    gate: Gatekeeper
    audit_trail: AuditTrail
    realms: RealmCatalog
    health: DependencyMonitor
    metrics: BrokerMetrics
    tasks: TaskSupervisor
    forwarder: Forwarder | None = None
