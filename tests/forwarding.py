"""The forward proxy's test pieces: the Atlas API stand-in beside the stack, a broker
forwarding to it, realms whose secrets name their own `api_url`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from atlas_broker_dev.api_standin import ApiStandIn, start_api_standin
from atlas_broker_dev.processes import free_port
from atlas_broker_dev.servers import BrokerServer
from stack import Realm, Stack

BASE_PATH = "/base"  # BROKER_API_URL's own path prefix, which every target keeps


@dataclass
class ForwardSetup:
    stack: Stack
    api: ApiStandIn
    broker: BrokerServer
    dead_origin: str  # an allowed origin where nothing listens

    def forward_url(self, realm: str, path: str) -> str:
        return f"{self.broker.url}/v1/realms/{realm}/forward/{path}"

    def realm_with_api_url(self, api_url: str) -> Realm:
        realm = self.stack.new_realm("fwd")
        self.stack.openbao.write_realm(
            realm.name,
            {
                "client_id": realm.client_id,
                "client_secret": realm.client_secret,
                "api_url": api_url,
            },
        )
        return realm


@contextmanager
def forward_setup(stack: Stack, **env: str) -> Iterator[ForwardSetup]:
    """The API stand-in and a broker whose BROKER_API_URL is the stand-in's `/base`."""
    api = start_api_standin(stack.log_dir, idp_url=stack.idp.url)
    dead_origin = f"http://127.0.0.1:{free_port()}"
    try:
        broker = stack.start_broker(
            BROKER_API_URL=api.url + BASE_PATH,
            BROKER_IDP_ALLOWED_ORIGINS=dead_origin,
            **env,
        )
        yield ForwardSetup(stack, api, broker, dead_origin)
    finally:
        api.process.stop()


def sha256(value: str | bytes) -> str:
    data = value.encode() if isinstance(value, str) else value
    return hashlib.sha256(data).hexdigest()
