"""The Python SDK against a running broker: one broker call per token, renewal before
expiry, one retry after a 401 from the Atlas API, workload JWT files that rotate, and a
stand-in Atlas API that verifies every token against the development IdP's JWKS."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from atlas_broker_client import (
    BrokerAuth,
    BrokerConfigError,
    BrokerDenied,
    BrokerUnreachable,
)
from atlas_broker_dev.processes import free_port
from atlas_broker_dev.servers import BrokerServer
from polling import read_until
from stack import Realm, Stack
from threaded_server import ThreadedServer

ACCOUNTS = "/v2/accounts"


class Atlas:
    """A stand-in for the Atlas API: accepts only tokens the realm's IdP key signed.

    `reject_next` makes it answer 401 to that many requests first, whatever they carry.
    """

    def __init__(self, idp_url: str, realm: str) -> None:
        self.issuer = f"{idp_url}/auth/realms/{realm}"
        self._jwks = jwt.PyJWKClient(f"{self.issuer}/protocol/openid-connect/certs")
        self._lock = threading.Lock()
        self.reject_next = 0
        self.tokens: list[str] = []
        self.remaining: list[float] = []  # seconds each accepted token had left on arrival
        self.url = ""

    def app(self) -> Starlette:
        return Starlette(routes=[Route(ACCOUNTS, self.accounts)])

    def accounts(self, request: Request) -> Response:
        # A sync endpoint: Starlette runs it in a thread, so the JWKS fetch may block.
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""
        with self._lock:
            self.tokens.append(token)
            rejected = self.reject_next > 0
            self.reject_next -= int(rejected)
        if rejected or not token:
            return _unauthorized()
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key=key,
                algorithms=["RS256"],
                issuer=self.issuer,
                options={"verify_aud": False, "require": ["exp", "iss"]},
            )
        except jwt.PyJWTError:
            return _unauthorized()
        with self._lock:
            self.remaining.append(claims["exp"] - time.time())
        return JSONResponse({"client_id": claims["azp"]})


def _unauthorized() -> Response:
    return JSONResponse(
        {"error": "invalid_token"},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


@contextlib.contextmanager
def serve(app: Starlette) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 from a thread; its base URL."""
    with ThreadedServer(app, name="Atlas stand-in") as server:
        yield server.url


@pytest.fixture(scope="module")
def broker(module_stack: Stack) -> BrokerServer:
    return module_stack.start_broker()


@pytest.fixture
def realm(module_stack: Stack) -> Realm:
    return module_stack.new_realm("sdk")


@pytest.fixture
def atlas(module_stack: Stack, realm: Realm) -> Iterator[Atlas]:
    api = Atlas(module_stack.idp.url, realm.name)
    with serve(api.app()) as url:
        api.url = url
        yield api
    module_stack.leak_watch.add(*api.tokens)


def broker_calls(stack: Stack, broker: BrokerServer, realm: str) -> int:
    """Tokens the broker handed out for `realm`, from its audit trail."""
    return sum(
        1
        for event in stack.audit_events(broker.process)
        if event["event"] == "token.issued" and event.get("realm") == realm
    )


def auth_for(stack: Stack, broker: BrokerServer, realm: Realm, **options: int) -> BrokerAuth:
    return BrokerAuth(broker.url, realm.name, api_key=stack.keys.everything, **options)


# -- the end-to-end path ------------------------------------------------------------------


def test_atlas_accepts_the_token_verified_against_the_idp_jwks(
    module_stack: Stack, broker: BrokerServer, realm: Realm, atlas: Atlas
) -> None:
    """A call through BrokerAuth carries a token the resource server verifies and accepts."""
    with httpx.Client(auth=auth_for(module_stack, broker, realm)) as client:
        response = client.get(f"{atlas.url}{ACCOUNTS}")
    assert 200 == response.status_code
    assert {"client_id": realm.client_id} == response.json()


def test_atlas_stand_in_rejects_a_token_it_cannot_verify(atlas: Atlas) -> None:
    """The stand-in really verifies: a token signed by another key is refused."""
    forged = jwt.encode({"iss": atlas.issuer, "exp": time.time() + 60}, "k" * 32, "HS256")
    response = httpx.get(f"{atlas.url}{ACCOUNTS}", headers={"Authorization": f"Bearer {forged}"})
    assert 401 == response.status_code


# -- reuse ------------------------------------------------------------------------------


def test_many_atlas_calls_make_one_broker_call(
    module_stack: Stack, broker: BrokerServer, realm: Realm, atlas: Atlas
) -> None:
    """Twenty Atlas calls reuse the one token the broker handed out."""
    with httpx.Client(auth=auth_for(module_stack, broker, realm)) as client:
        statuses = [client.get(f"{atlas.url}{ACCOUNTS}").status_code for _ in range(20)]
    assert [200] * 20 == statuses
    assert 1 == broker_calls(module_stack, broker, realm.name)
    assert 1 == len(set(atlas.tokens))


def test_concurrent_threads_share_one_broker_call(
    module_stack: Stack, broker: BrokerServer, realm: Realm, atlas: Atlas
) -> None:
    """Eight threads starting together on a cold cache make one broker call between them."""
    auth = auth_for(module_stack, broker, realm)
    start = threading.Barrier(8)
    statuses: list[int] = []

    def work() -> None:
        with httpx.Client(auth=auth) as client:
            start.wait(timeout=10)
            statuses.extend(client.get(f"{atlas.url}{ACCOUNTS}").status_code for _ in range(5))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [200] * 40 == statuses
    assert 1 == broker_calls(module_stack, broker, realm.name)


async def test_concurrent_tasks_share_one_broker_call(
    module_stack: Stack, broker: BrokerServer, realm: Realm, atlas: Atlas
) -> None:
    """Twenty asyncio tasks on a cold cache make one broker call between them."""
    async with httpx.AsyncClient(auth=auth_for(module_stack, broker, realm)) as client:
        responses = await asyncio.gather(*(client.get(f"{atlas.url}{ACCOUNTS}") for _ in range(20)))
    assert [200] * 20 == [r.status_code for r in responses]
    assert 1 == broker_calls(module_stack, broker, realm.name)


def test_requests_session_reuses_the_token(
    module_stack: Stack, broker: BrokerServer, realm: Realm, atlas: Atlas
) -> None:
    """BrokerAuth works as requests' auth, with the same one broker call for many."""
    auth = auth_for(module_stack, broker, realm)
    with requests.Session() as session:
        statuses = [session.get(f"{atlas.url}{ACCOUNTS}", auth=auth).status_code for _ in range(5)]
    assert [200] * 5 == statuses
    assert 1 == broker_calls(module_stack, broker, realm.name)


# -- renewal ------------------------------------------------------------------------------

LIFETIME = 4  # seconds; with BROKER_EXPIRY_SKEW=1 the broker treats tokens as valid for 3
MIN_TTL = 1


@pytest.fixture
def short_lived_tokens(stack: Stack) -> Iterator[None]:
    with stack.token_lifetime(LIFETIME):
        yield


@pytest.mark.usefixtures("short_lived_tokens")
def test_token_is_renewed_min_ttl_before_it_expires(stack: Stack) -> None:
    """Across several short lifetimes each token is replaced before it has less than
    min_ttl left, with one broker call per token and no 401 on the way."""
    broker = stack.start_broker(BROKER_EXPIRY_SKEW="1", BROKER_REFRESH_BEFORE="2")
    realm = stack.new_realm("renew")
    api = Atlas(stack.idp.url, realm.name)
    auth = BrokerAuth(broker.url, realm.name, api_key=stack.keys.everything, min_ttl=MIN_TTL)
    statuses = []
    with serve(api.app()) as url, httpx.Client(auth=auth) as client:

        def call() -> int:
            statuses.append(client.get(f"{url}{ACCOUNTS}").status_code)
            return len(set(api.tokens))

        read_until(call, lambda seen: seen >= 3, timeout=10 * LIFETIME)
    stack.leak_watch.add(*api.tokens)
    assert 3 == len(set(api.tokens))
    assert [200] * len(statuses) == statuses
    assert min(api.remaining) >= MIN_TTL - 0.25  # 0.25 s for the round trips
    assert 3 == broker_calls(stack, broker, realm.name)


# -- the 401 retry ------------------------------------------------------------------------


def test_401_from_atlas_fetches_a_token_again_and_retries_once(
    module_stack: Stack, broker: BrokerServer, realm: Realm, atlas: Atlas
) -> None:
    """One 401 from Atlas: the SDK asks the broker again and the retried call succeeds."""
    auth = auth_for(module_stack, broker, realm)
    with httpx.Client(auth=auth) as client:
        assert 200 == client.get(f"{atlas.url}{ACCOUNTS}").status_code
        atlas.reject_next = 1
        response = client.get(f"{atlas.url}{ACCOUNTS}")
    assert 200 == response.status_code
    assert 3 == len(atlas.tokens)
    assert 2 == broker_calls(module_stack, broker, realm.name)


def test_second_401_is_returned_without_another_retry(
    module_stack: Stack, broker: BrokerServer, realm: Realm, atlas: Atlas
) -> None:
    """An Atlas API that keeps answering 401 sees the request twice, not in a loop."""
    atlas.reject_next = 10
    with httpx.Client(auth=auth_for(module_stack, broker, realm)) as client:
        response = client.get(f"{atlas.url}{ACCOUNTS}")
    assert 401 == response.status_code
    assert 2 == len(atlas.tokens)


async def test_async_401_is_retried_once(
    module_stack: Stack, broker: BrokerServer, realm: Realm, atlas: Atlas
) -> None:
    """The async flow retries a 401 once with a token fetched again."""
    atlas.reject_next = 1
    async with httpx.AsyncClient(auth=auth_for(module_stack, broker, realm)) as client:
        response = await client.get(f"{atlas.url}{ACCOUNTS}")
    assert 200 == response.status_code
    assert 2 == len(atlas.tokens)
    assert 2 == broker_calls(module_stack, broker, realm.name)


def test_requests_401_is_retried_once(
    module_stack: Stack, broker: BrokerServer, realm: Realm, atlas: Atlas
) -> None:
    """With requests, one 401 is retried once and the first answer kept in history."""
    atlas.reject_next = 1
    response = requests.get(
        f"{atlas.url}{ACCOUNTS}", auth=auth_for(module_stack, broker, realm), timeout=30
    )
    assert (200, [401]) == (response.status_code, [r.status_code for r in response.history])
    assert 2 == broker_calls(module_stack, broker, realm.name)


# -- errors -------------------------------------------------------------------------------


def test_unknown_key_raises_denied_without_the_key(
    broker: BrokerServer, realm: Realm, atlas: Atlas
) -> None:
    """A key the broker does not know raises BrokerDenied; the key is in no message."""
    key = "sdk-unknown-key-" + "x" * 20
    auth = BrokerAuth(broker.url, realm.name, api_key=key)
    with httpx.Client(auth=auth) as client, pytest.raises(BrokerDenied) as caught:
        client.get(f"{atlas.url}{ACCOUNTS}")
    assert 401 == caught.value.status
    assert key not in str(caught.value)
    assert key not in repr(auth)
    assert [] == atlas.tokens  # nothing was sent to Atlas


def test_broker_unreachable_raises_broker_unreachable() -> None:
    """No broker listening: BrokerUnreachable, raised from the Atlas call."""
    auth = BrokerAuth(f"http://127.0.0.1:{free_port()}", "acme", api_key="k" * 16)
    with pytest.raises(BrokerUnreachable):
        httpx.get("http://127.0.0.1:1/never-reached", auth=auth)


# -- workload JWT files (the broker does not take them yet: a stand-in broker) ------------


class FakeBroker:
    """Answers every token request with a new token that is due for renewal at once."""

    def __init__(self) -> None:
        self.credentials: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.credentials.append(request.headers["authorization"])
        return httpx.Response(
            200,
            json={
                "access_token": f"token-{len(self.credentials)}",
                "token_type": "Bearer",
                "expires_in": 60,  # == min_ttl: the SDK asks again for the next request
                "expires_at": "2030-01-01T00:00:00Z",
                "realm": "acme",
            },
        )

    def auth(self, jwt_file: Path) -> BrokerAuth:
        client = httpx.Client(transport=httpx.MockTransport(self.handle))
        return BrokerAuth("http://broker.test", "acme", jwt_file=jwt_file, client=client)


def test_jwt_file_is_the_bearer_credential_to_the_broker(tmp_path: Path) -> None:
    """The workload JWT file's content, stripped, is sent as the broker credential."""
    path = tmp_path / "token"
    path.write_text("jwt-one\n")
    broker = FakeBroker()
    assert "token-1" == broker.auth(path).token().access_token
    assert ["Bearer jwt-one"] == broker.credentials


def test_rotated_jwt_file_is_sent_on_the_next_broker_call(tmp_path: Path) -> None:
    """After the file changes, the next broker call carries the new JWT."""
    path = tmp_path / "token"
    path.write_text("jwt-one")
    broker = FakeBroker()
    auth = broker.auth(path)
    auth.token()
    path.write_text("jwt-two")
    auth.token()
    assert ["Bearer jwt-one", "Bearer jwt-two"] == broker.credentials


def test_jwt_file_swapped_by_symlink_is_followed(tmp_path: Path) -> None:
    """A Kubernetes-style atomic symlink swap of the token file is picked up."""
    for version in ("v1", "v2"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "token").write_text(f"jwt-{version}")
    link = tmp_path / "token"
    link.symlink_to(tmp_path / "v1" / "token")
    broker = FakeBroker()
    auth = broker.auth(link)
    auth.token()
    swap = tmp_path / "token.new"
    swap.symlink_to(tmp_path / "v2" / "token")
    os.replace(swap, link)
    auth.token()
    assert ["Bearer jwt-v1", "Bearer jwt-v2"] == broker.credentials


def test_missing_jwt_file_is_a_config_error(tmp_path: Path) -> None:
    """A JWT file that is not there raises BrokerConfigError naming the path."""
    broker = FakeBroker()
    with pytest.raises(BrokerConfigError, match="token"):
        broker.auth(tmp_path / "token").token()
    assert [] == broker.credentials


def test_from_env_reads_the_broker_url_and_key() -> None:
    """BrokerAuth.from_env takes BROKER_URL and BROKER_API_KEY."""
    auth = BrokerAuth.from_env(
        "acme", environ={"BROKER_URL": "http://broker.test:8080", "BROKER_API_KEY": "k" * 16}
    )
    assert ("http://broker.test:8080", "acme") == (auth.broker_url, auth.realm)
