"""The running IdP's mutable state: realms, clients, keys, counters and injected faults.

One object per app, changed only from the event loop, so no locks are needed; every
change is visible to the very next request, which is what tests that rotate a secret or
inject a fault rely on.
"""

from __future__ import annotations

import collections
import dataclasses
import hmac
from typing import Literal

import anyio.to_thread

from atlas_broker_dev.idp.config import DevClient, IdPConfig, RealmOptions
from atlas_broker_dev.idp.keys import RealmKey
from atlas_broker_dev.idp.tokens import realm_issuer

FaultMode = Literal[
    "status_500",
    "html",
    "garbage",
    "no_access_token",
    "wrong_token_type",
    "expired",
    "bad_signature",
    "alg_none",
    "foreign_issuer",
    "hang",
    "delay",
]


@dataclasses.dataclass(slots=True)
class Fault:
    """A misbehaviour of the token endpoint, for one realm or (``realm=None``) all of them.

    ``remaining`` counts the token requests it still applies to; ``None`` means until cleared.
    """

    mode: FaultMode
    realm: str | None = None
    seconds: float = 0.0
    remaining: int | None = None


class IdPState:
    """Realms with their clients and keys, request counters, and the active faults."""

    def __init__(self, config: IdPConfig) -> None:
        self.clients: dict[str, dict[str, DevClient]] = {
            realm: {client.client_id: client for client in clients}
            for realm, clients in config.clients.items()
        }
        self.options: dict[str, RealmOptions] = dict(config.realms)
        for realm in self.options:
            self.clients.setdefault(realm, {})
        self.keys: dict[str, RealmKey] = {realm: RealmKey.generate() for realm in self.clients}
        self.token_lifetime = config.token_lifetime
        self.issuer_base = config.issuer_base
        self.admin_token = config.admin_token
        self.faults: dict[str | None, Fault] = {}
        self.token_requests: collections.Counter[str] = collections.Counter()
        self.tokens_issued: collections.Counter[str] = collections.Counter()
        self.discovery_requests: collections.Counter[str] = collections.Counter()
        # Token requests per realm and Host header: which of the IdP's names was used.
        self.token_hosts: dict[str, collections.Counter[str]] = {}

    def realm_options(self, realm: str) -> RealmOptions:
        return self.options.get(realm) or RealmOptions()

    def issuer(self, request_base_url: str, realm: str) -> str:
        """``iss`` of a realm: from the configured base, else from the request's base URL."""
        options = self.realm_options(realm)
        if options.issuer is not None:
            return options.issuer
        path = options.path
        return realm_issuer(self.issuer_base or request_base_url, realm, path)

    async def put_realm(self, realm: str, options: RealmOptions) -> None:
        """Set a realm's options, creating the realm (without clients) when missing."""
        await self._ensure_key(realm)
        self.clients.setdefault(realm, {})
        self.options[realm] = options

    async def _ensure_key(self, realm: str) -> None:
        if realm not in self.keys:
            key = await anyio.to_thread.run_sync(RealmKey.generate)
            # Another request may have created the realm meanwhile; keep its key so
            # tokens it already signed stay verifiable.
            self.keys.setdefault(realm, key)

    def find_client(self, realm: str, client_id: str, client_secret: str) -> DevClient | None:
        """The client if the secret matches; the comparison is constant-time even when the
        client is unknown, so response timing does not reveal which client ids exist."""
        client = self.clients.get(realm, {}).get(client_id)
        expected = client.client_secret if client is not None else "\x00unknown-client"
        matches = hmac.compare_digest(expected.encode("utf-8"), client_secret.encode("utf-8"))
        return client if matches and client is not None else None

    async def put_client(self, realm: str, client: DevClient) -> bool:
        """Add or replace a client, creating the realm (and its key) when missing.

        Returns whether the client is new. Key generation runs off the event loop so a
        realm created mid-test does not stall requests in flight.
        """
        await self._ensure_key(realm)
        clients = self.clients.setdefault(realm, {})
        created = client.client_id not in clients
        clients[client.client_id] = client
        return created

    def delete_client(self, realm: str, client_id: str) -> bool:
        """Remove a client; the realm and its key stay. Returns whether it existed."""
        return self.clients.get(realm, {}).pop(client_id, None) is not None

    def delete_realm(self, realm: str) -> bool:
        """Remove a realm with its clients and key. Returns whether it existed."""
        self.keys.pop(realm, None)
        self.options.pop(realm, None)
        return self.clients.pop(realm, None) is not None

    def take_fault(self, realm: str) -> Fault | None:
        """The fault for this token request (a realm's own before the global one), used up
        by one count."""
        key: str | None = realm if realm in self.faults else None
        fault = self.faults.get(key)
        if fault is None:
            return None
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                del self.faults[key]
        return fault

    def stats(self) -> dict[str, object]:
        """Counters as served by ``GET /_dev/stats``."""
        return {
            "token_requests": dict(sorted(self.token_requests.items())),
            "token_requests_total": self.token_requests.total(),
            "tokens_issued": dict(sorted(self.tokens_issued.items())),
            "tokens_issued_total": self.tokens_issued.total(),
            "discovery_requests": dict(sorted(self.discovery_requests.items())),
            "token_hosts": {
                realm: dict(hosts) for realm, hosts in sorted(self.token_hosts.items())
            },
        }

    def reset_stats(self) -> None:
        """Zero every counter."""
        self.token_requests.clear()
        self.tokens_issued.clear()
        self.discovery_requests.clear()
        self.token_hosts.clear()
