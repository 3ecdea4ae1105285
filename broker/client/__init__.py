"""Python SDK of the Atlas Token Broker: Atlas API tokens for httpx and requests.

    from broker.client import BrokerAuth

    auth = BrokerAuth("http://broker:8080", "acme", api_key=os.environ["BROKER_API_KEY"])
    httpx.get("https://atlas.example.com/v2/accounts", auth=auth)

`BrokerAuth` caches the realm's token in the process and renews it `min_ttl` seconds
before expiry; `broker token REALM` (`broker.client.cli`) does the same from a shell.
"""

from broker.client._wire import BrokerToken
from broker.client.auth import DEFAULT_BROKER_URL, DEFAULT_MIN_TTL, BrokerAuth
from broker.client.errors import (
    BrokerClientError,
    BrokerConfigError,
    BrokerDenied,
    BrokerInvalidRequest,
    BrokerResponseError,
    BrokerUnreachable,
    BrokerUpstreamError,
)

__all__ = [
    "DEFAULT_BROKER_URL",
    "DEFAULT_MIN_TTL",
    "BrokerAuth",
    "BrokerClientError",
    "BrokerConfigError",
    "BrokerDenied",
    "BrokerInvalidRequest",
    "BrokerResponseError",
    "BrokerToken",
    "BrokerUnreachable",
    "BrokerUpstreamError",
]
