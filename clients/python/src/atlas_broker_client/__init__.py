"""Python SDK of the Atlas Token Broker: Atlas API tokens for httpx and requests.

    from atlas_broker_client import BrokerAuth

    auth = BrokerAuth("http://broker:8080", "acme", api_key=os.environ["BROKER_API_KEY"])
    httpx.get("https://atlas.example.com/v2/accounts", auth=auth)

`BrokerAuth` caches the realm's token in the process and renews it `min_ttl` seconds
before expiry. `BrokerClient` speaks the rest of the broker's API (realms, rotation,
eviction, the audit trail) one request at a time; the `broker` command is built on it.
`ForwardTransport` / `AsyncForwardTransport` send httpx requests through the broker's
forward proxy instead, so the service never holds a token at all.
It depends on httpx only; requests is used when requests calls it.
"""

from atlas_broker_client._credential import DEFAULT_BROKER_URL
from atlas_broker_client._version import __version__
from atlas_broker_client._wire import BrokerToken, is_valid_realm
from atlas_broker_client.auth import DEFAULT_MIN_TTL, BrokerAuth
from atlas_broker_client.client import AuditFilters, AuditPage, BrokerClient, RealmInfo
from atlas_broker_client.errors import (
    BrokerClientError,
    BrokerConfigError,
    BrokerDenied,
    BrokerInvalidRequest,
    BrokerResponseError,
    BrokerUnreachable,
    BrokerUpstreamError,
)
from atlas_broker_client.forward import AsyncForwardTransport, ForwardTransport

__all__ = [
    "DEFAULT_BROKER_URL",
    "DEFAULT_MIN_TTL",
    "AsyncForwardTransport",
    "AuditFilters",
    "AuditPage",
    "BrokerAuth",
    "BrokerClient",
    "BrokerClientError",
    "BrokerConfigError",
    "BrokerDenied",
    "BrokerInvalidRequest",
    "BrokerResponseError",
    "BrokerToken",
    "BrokerUnreachable",
    "BrokerUpstreamError",
    "ForwardTransport",
    "RealmInfo",
    "__version__",
    "is_valid_realm",
]
