"""nginx `auth_request` in front of the Atlas API stand-in, asking a broker's gateway
route: the configuration is the one docs/gateway.md documents, run by a real nginx."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest
from forwarding import BASE_PATH, ForwardSetup, forward_setup, sha256
from nginx import start_nginx

from atlas_broker_dev.processes import ManagedProcess
from stack import Stack, bearer


@dataclass
class Gateway:
    fwd: ForwardSetup
    realm: str
    nginx: ManagedProcess
    url: str


@pytest.fixture(scope="module")
def gateway(module_stack: Stack) -> Iterator[Gateway]:
    with forward_setup(module_stack) as fwd:
        realm = module_stack.new_realm("gw").name
        nginx, url = start_nginx(
            module_stack.log_dir,
            broker_host=urlsplit(fwd.broker.url).netloc,
            realm=realm,
            api_url=fwd.api.url + BASE_PATH,
        )
        try:
            yield Gateway(fwd, realm, nginx, url)
        finally:
            nginx.stop()


def test_caller_with_its_key_gets_the_api_answer(gateway: Gateway) -> None:
    """A caller sending its broker key to nginx gets the API's answer; the API saw the
    realm's token, not the key."""
    key = gateway.fwd.stack.keys.everything

    response = httpx.get(
        f"{gateway.url}/api/v1/accountreports?year=2026", headers=bearer(key), timeout=30
    )

    echo = response.json()
    assert (200, f"{BASE_PATH}/api/v1/accountreports", "year=2026", False, False) == (
        response.status_code,
        echo["raw_path"],
        echo["query"],
        key in response.text,
        sha256(key) == echo["token_sha256"],
    )


def test_caller_response_never_holds_the_token(gateway: Gateway) -> None:
    """Neither the headers nor the body nginx returns hold the realm's token."""
    response = httpx.post(
        f"{gateway.url}/api/v1/orders",
        headers=bearer(gateway.fwd.stack.keys.everything),
        content=b'{"n": 1}',
        timeout=30,
    )
    token = gateway.fwd.stack.get_token(gateway.fwd.broker.url, gateway.realm).json()[
        "access_token"
    ]

    seen = response.text + "".join(f"{k}: {v}\n" for k, v in response.headers.items())
    assert (200, sha256(token), False) == (
        response.status_code,
        response.json()["token_sha256"],
        token in seen,
    )


def test_wrong_key_gets_401_and_the_api_sees_nothing(gateway: Gateway) -> None:
    """A wrong key gets nginx's 401, and no request reaches the API."""
    before = gateway.fwd.api.requests()

    response = httpx.get(f"{gateway.url}/api/v1/x", headers=bearer("not-a-key"), timeout=30)

    assert (401, before) == (response.status_code, gateway.fwd.api.requests())


def test_caller_without_the_realm_gets_403_and_the_api_sees_nothing(gateway: Gateway) -> None:
    """A caller allowed only another realm gets 403, and no request reaches the API."""
    before = gateway.fwd.api.requests()

    response = httpx.get(
        f"{gateway.url}/api/v1/x", headers=bearer(gateway.fwd.stack.keys.limited), timeout=30
    )

    assert (403, before) == (response.status_code, gateway.fwd.api.requests())
