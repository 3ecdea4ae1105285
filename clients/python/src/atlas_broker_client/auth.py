"""`BrokerAuth`: Atlas API tokens from the broker, attached to every request.

One object serves httpx (`httpx.Client` and `httpx.AsyncClient`) and requests (it is a
callable `AuthBase`), without importing requests unless requests calls it.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Generator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from atlas_broker_client._credential import Credential, settings_from_env
from atlas_broker_client._wire import (
    BrokerToken,
    check_broker_url,
    check_realm,
    parse_token_response,
    request_headers,
    token_url,
    unreachable,
)
from atlas_broker_client.errors import BrokerConfigError

if TYPE_CHECKING:
    import requests

DEFAULT_MIN_TTL = 60
_MAX_MIN_TTL = 86400


@dataclass(frozen=True, slots=True)
class _Cached:
    token: BrokerToken
    refresh_at: float  # time.monotonic() after which the token is fetched again


class BrokerAuth(httpx.Auth):
    """Sends `Authorization: Bearer <Atlas token>`, the token obtained from the broker.

    The token is cached in the process and reused until `min_ttl` seconds before it
    expires; then the next request fetches the next one from the broker
    (`GET {broker_url}/v1/realms/{realm}/token?min_ttl=...`, authenticated with the
    caller's API key or workload JWT). Concurrent requests share one broker call: a
    thread lock guards the sync path, an asyncio lock per event loop the async one.

    When the Atlas API answers 401, the token is dropped, one token is fetched from the
    broker again and the request is sent once more; a second 401 is returned as it is.
    Request bodies are buffered so that the retry can resend them.

    With httpx, sync or async::

        auth = BrokerAuth("http://broker:8080", "acme", api_key=os.environ["BROKER_API_KEY"])
        with httpx.Client(base_url="https://atlas.example.com", auth=auth) as atlas:
            atlas.get("/v2/accounts")

        async with httpx.AsyncClient(auth=auth) as atlas:
            await atlas.get("https://atlas.example.com/v2/accounts")

    With requests (installed separately; the SDK does not depend on it)::

        requests.get("https://atlas.example.com/v2/accounts", auth=auth)

    With a workload identity instead of a key (re-read whenever it rotates)::

        BrokerAuth(
            "http://broker:8080",
            "acme",
            jwt_file="/var/run/secrets/tokens/atlas-broker",
        )

    Or configured by `BROKER_URL` and `BROKER_API_KEY` / `BROKER_JWT_FILE`::

        auth = BrokerAuth.from_env("acme")

    Errors are `atlas_broker_client.errors.BrokerClientError`s (see that module's tree); they
    are raised from the request that needed a token. `client` / `async_client` replace
    the short-lived clients made for each broker call (for a proxy, TLS settings, or a
    test transport); they stay the caller's to close.
    """

    requires_request_body = True  # a retried request must be able to resend its body

    def __init__(
        self,
        broker_url: str,
        realm: str,
        *,
        api_key: str | None = None,
        jwt_file: str | os.PathLike[str] | None = None,
        min_ttl: int = DEFAULT_MIN_TTL,
        timeout: float = 10.0,
        client: httpx.Client | None = None,
        async_client: httpx.AsyncClient | None = None,
    ) -> None:
        broker_url = check_broker_url(broker_url)
        check_realm(realm)
        if isinstance(min_ttl, bool) or not 0 <= min_ttl <= _MAX_MIN_TTL:
            raise BrokerConfigError(f"min_ttl must be between 0 and {_MAX_MIN_TTL} seconds")
        if timeout <= 0:
            raise BrokerConfigError("timeout must be positive")
        self.broker_url = broker_url
        self.realm = realm
        self.min_ttl = min_ttl
        self._credential = Credential(api_key, jwt_file)
        self._timeout = httpx.Timeout(timeout)
        self._client = client
        self._async_client = async_client
        self._cached: _Cached | None = None
        self._state_lock = threading.Lock()  # held only for in-memory updates, never for I/O
        self._sync_fetch = threading.Lock()  # one sync broker call at a time
        self._async_fetch: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]
        self._async_fetch = weakref.WeakKeyDictionary()

    @classmethod
    def from_env(
        cls,
        realm: str,
        *,
        min_ttl: int = DEFAULT_MIN_TTL,
        timeout: float = 10.0,
        environ: Mapping[str, str] | None = None,
    ) -> BrokerAuth:
        """Configured by `BROKER_URL` (default `http://127.0.0.1:8080`) and one of
        `BROKER_API_KEY` or `BROKER_JWT_FILE`."""
        url, api_key, jwt_file = settings_from_env(environ)
        return cls(
            url,
            realm,
            api_key=api_key,
            jwt_file=jwt_file,
            min_ttl=min_ttl,
            timeout=timeout,
        )

    def __repr__(self) -> str:
        return (
            f"BrokerAuth(broker_url={self.broker_url!r}, realm={self.realm!r}, "
            f"{self._credential.describe()}, min_ttl={self.min_ttl})"
        )

    # -- tokens -----------------------------------------------------------------------

    def token(self) -> BrokerToken:
        """A token with at least `min_ttl` seconds left: the cached one, or a new one."""
        cached = self._fresh()
        if cached is not None:
            return cached
        with self._sync_fetch:
            return self._fresh() or self._fetch_sync()

    async def atoken(self) -> BrokerToken:
        """`token()` for asyncio: concurrent tasks share one broker call."""
        cached = self._fresh()
        if cached is not None:
            return cached
        async with self._async_lock():
            return self._fresh() or await self._fetch_async()

    def invalidate(self) -> None:
        """Forget the cached token: the next request fetches one from the broker."""
        with self._state_lock:
            self._cached = None

    def _fresh(self, *, unless: str | None = None) -> BrokerToken | None:
        cached = self._cached
        if cached is None or time.monotonic() >= cached.refresh_at:
            return None
        if unless is not None and cached.token.access_token == unless:
            return None
        return cached.token

    def _remember(self, token: BrokerToken, asked_at: float) -> BrokerToken:
        # Counted from when the request left, so transit time only makes it earlier.
        refresh_at = asked_at + token.expires_in - self.min_ttl
        with self._state_lock:
            self._cached = _Cached(token, refresh_at)
        return token

    def _async_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._state_lock:
            lock = self._async_fetch.get(loop)
            if lock is None:
                lock = self._async_fetch[loop] = asyncio.Lock()
            return lock

    def _renew_sync(self, rejected: str) -> BrokerToken:
        """A token after `rejected` got a 401: another thread's renewal, or a new fetch."""
        with self._sync_fetch:
            return self._fresh(unless=rejected) or self._fetch_sync()

    async def _renew_async(self, rejected: str) -> BrokerToken:
        async with self._async_lock():
            return self._fresh(unless=rejected) or await self._fetch_async()

    def _fetch_sync(self) -> BrokerToken:
        credential = self._credential.read()
        url, headers = token_url(self.broker_url, self.realm), request_headers(credential)
        params = {"min_ttl": str(self.min_ttl)}
        asked_at = time.monotonic()
        try:
            if self._client is not None:
                response = self._client.get(url, params=params, headers=headers, auth=None)
            else:
                with httpx.Client(timeout=self._timeout, follow_redirects=False) as client:
                    response = client.get(url, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise unreachable(self.broker_url, exc) from exc
        token = parse_token_response(response, realm=self.realm, secret=credential)
        return self._remember(token, asked_at)

    async def _fetch_async(self) -> BrokerToken:
        credential = self._credential.read()
        url, headers = token_url(self.broker_url, self.realm), request_headers(credential)
        params = {"min_ttl": str(self.min_ttl)}
        asked_at = time.monotonic()
        try:
            if self._async_client is not None:
                response = await self._async_client.get(
                    url, params=params, headers=headers, auth=None
                )
            else:
                async with httpx.AsyncClient(
                    timeout=self._timeout, follow_redirects=False
                ) as client:
                    response = await client.get(url, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise unreachable(self.broker_url, exc) from exc
        token = parse_token_response(response, realm=self.realm, secret=credential)
        return self._remember(token, asked_at)

    # -- httpx ------------------------------------------------------------------------

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        request.read()
        token = self.token()
        request.headers["Authorization"] = f"Bearer {token.access_token}"
        response = yield request
        if response.status_code == 401:
            renewed = self._renew_sync(token.access_token)
            request.headers["Authorization"] = f"Bearer {renewed.access_token}"
            yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await request.aread()
        token = await self.atoken()
        request.headers["Authorization"] = f"Bearer {token.access_token}"
        response = yield request
        if response.status_code == 401:
            renewed = await self._renew_async(token.access_token)
            request.headers["Authorization"] = f"Bearer {renewed.access_token}"
            yield request

    # -- requests ---------------------------------------------------------------------

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        """requests' `AuthBase` protocol: `requests.get(url, auth=BrokerAuth(...))`."""
        request.headers["Authorization"] = f"Bearer {self.token().access_token}"
        request.hooks["response"].append(self._retry_after_401)
        return request

    def _retry_after_401(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        """requests response hook: one retry with a renewed token after a 401.

        The retry is sent on the adapter directly (as `HTTPDigestAuth` does), so hooks do
        not run for it and it cannot retry again.
        """
        import requests.utils

        sent = str(response.request.headers.get("Authorization", ""))
        if response.status_code != 401 or not sent.startswith("Bearer "):
            # No token of ours went out (a redirect to another host drops it): no retry.
            return response
        retry = response.request.copy()
        body = retry.body
        if body is not None and not isinstance(body, bytes | str):
            if not isinstance(getattr(retry, "_body_position", None), int):
                return response  # a stream that cannot be rewound cannot be resent
            requests.utils.rewind_body(retry)
        renewed = self._renew_sync(sent.removeprefix("Bearer "))
        retry.headers["Authorization"] = f"Bearer {renewed.access_token}"
        _ = response.content  # drain, so the connection goes back to the pool
        response.close()
        retried: requests.Response = response.connection.send(retry, **kwargs)
        retried.history.append(response)
        retried.request = retry
        return retried
