"""`JwksVerifier`: checks a token's signature against the realm's published keys.

Keys come from the realm's JWKS (`…/protocol/openid-connect/certs`), are cached, and are
fetched again when a token names an unknown `kid` (the IdP rotated its key), at most once
per `refetch_interval` so a stream of forged `kid`s cannot hammer the IdP. Only
asymmetric algorithms are accepted and each key is pinned to its own algorithm: `none`
and HMAC-with-the-public-key confusion cannot pass.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class VerificationError(Exception):
    """The token is not signed by the realm (message says why, never the token)."""


@dataclass
class _KeySet:
    keys: dict[str, jwt.PyJWK] = field(default_factory=dict)
    fetched_at: float = 0.0


def _parse_jwks(document: Any) -> dict[str, jwt.PyJWK]:
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document.get("keys", []) if isinstance(document, dict) else []:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
        if key.algorithm_name in ASYMMETRIC_ALGORITHMS and key.key_id:
            keys[key.key_id] = key
    return keys


class JwksVerifier:
    def __init__(
        self, client: httpx.AsyncClient, *, refetch_interval: float = 10.0, max_age: float = 3600.0
    ) -> None:
        self._client = client
        self._refetch_interval = refetch_interval
        self._max_age = max_age
        self._sets: dict[str, _KeySet] = {}

    async def _fetch(self, url: str) -> _KeySet:
        try:
            response = await self._client.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            keys = _parse_jwks(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            raise VerificationError(
                f"the realm's JWKS could not be read ({type(exc).__name__})"
            ) from exc
        keyset = _KeySet(keys, time.monotonic())
        self._sets[url] = keyset
        return keyset

    async def _key(self, url: str, kid: str) -> jwt.PyJWK:
        keyset = self._sets.get(url)
        age = time.monotonic() - keyset.fetched_at if keyset else math.inf
        stale = age > self._max_age
        rotated = keyset is not None and kid not in keyset.keys and age > self._refetch_interval
        if keyset is None or stale or rotated:
            keyset = await self._fetch(url)
        key = keyset.keys.get(kid)
        if key is None:
            raise VerificationError("the token's key id is not in the realm's JWKS")
        return key

    async def verify(self, token: str, *, jwks_url: str, issuer: str) -> dict[str, Any]:
        """The token's claims, if the realm signed it with a pinned asymmetric algorithm
        and it names the realm as issuer."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise VerificationError("the token is not a JWT") from exc
        kid, alg = header.get("kid"), header.get("alg")
        if alg not in ASYMMETRIC_ALGORITHMS:
            raise VerificationError(f"algorithm {str(alg)[:16]!r} is not accepted")
        if not isinstance(kid, str) or not kid:
            raise VerificationError("the token names no key id")
        key = await self._key(jwks_url, kid)
        if key.algorithm_name != alg:
            raise VerificationError("the token's algorithm does not match its key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[key.algorithm_name],
                issuer=issuer,
                # Expiry is judged by the broker's own rules; iat/nbf get leeway for an IdP
                # whose clock runs slightly ahead.
                leeway=60,
                options={"require": ["exp", "iss"], "verify_aud": False, "verify_exp": False},
            )
        except jwt.PyJWTError as exc:
            raise VerificationError(
                f"the token failed verification ({type(exc).__name__})"
            ) from exc
        return claims
