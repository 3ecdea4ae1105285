"""`RedisTokenStore`: tokens and fetch locks shared by every replica through Redis.

Keys (DESIGN.md, "Redis layout"): `{prefix}:token:{realm}` with a TTL from the token's
expiry, `{prefix}:lock:{realm}` holding the fetching replica's owner id.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from broker.core import rules
from broker.core.errors import StoreUnavailable
from broker.core.models import AccessToken

log = logging.getLogger(__name__)

# Compare-and-delete / compare-and-extend: only the owner may release or extend its lock.
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
_EXTEND = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(f"redis: {type(exc).__name__}") from exc


def create_redis(url: str) -> aioredis.Redis:
    """A client that fails fast: a dead Redis must cost a request milliseconds, not
    seconds, because the broker can serve without it."""
    return aioredis.from_url(
        url,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        health_check_interval=15,
        client_name="atlas-broker",
        decode_responses=False,
    )


def encode_token(token: AccessToken) -> bytes:
    return json.dumps(
        {
            "access_token": token.value,
            "expires_at": token.expires_at,
            "issued_at": token.issued_at,
            "scope": token.scope,
        }
    ).encode()


def decode_token(raw: bytes | str) -> AccessToken | None:
    try:
        data: Any = json.loads(raw)
        return AccessToken(
            value=str(data["access_token"]),
            expires_at=float(data["expires_at"]),
            issued_at=float(data["issued_at"]),
            scope=data.get("scope"),
        )
    except (ValueError, KeyError, TypeError):
        return None


class RedisTokenStore:
    def __init__(self, client: aioredis.Redis, *, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._release = client.register_script(_RELEASE)
        self._extend = client.register_script(_EXTEND)

    async def get(self, realm: str) -> AccessToken | None:
        with _mapped():
            raw = await self._redis.get(rules.token_key(self._prefix, realm))
        if raw is None:
            return None
        token = decode_token(raw)
        if token is None:
            log.warning(
                "unreadable token value in redis, treated as a miss", extra={"realm": realm}
            )
        return token

    async def put(self, realm: str, token: AccessToken, ttl: float) -> None:
        if ttl <= 0:
            return
        with _mapped():
            await self._redis.set(
                rules.token_key(self._prefix, realm), encode_token(token), ex=int(ttl)
            )

    async def acquire_lock(self, realm: str, owner: str, lease: float) -> bool:
        with _mapped():
            taken = await self._redis.set(
                rules.lock_key(self._prefix, realm), owner, nx=True, px=int(lease * 1000)
            )
        return bool(taken)

    async def extend_lock(self, realm: str, owner: str, lease: float) -> bool:
        with _mapped():
            extended = await self._extend(
                keys=[rules.lock_key(self._prefix, realm)], args=[owner, int(lease * 1000)]
            )
        return bool(extended)

    async def release_lock(self, realm: str, owner: str) -> None:
        with _mapped():
            await self._release(keys=[rules.lock_key(self._prefix, realm)], args=[owner])

    async def lock_held(self, realm: str) -> bool:
        with _mapped():
            return bool(await self._redis.exists(rules.lock_key(self._prefix, realm)))

    async def ping(self) -> None:
        with _mapped():
            await self._redis.ping()

    async def aclose(self) -> None:
        await self._redis.aclose()
