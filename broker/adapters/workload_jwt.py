"""`JwksWorkloadVerifier`: workload JWTs (Kubernetes projected service-account tokens,
any OIDC issuer) checked against the issuers the caller policy trusts.

For a token claiming issuer `iss` the policy's `jwt_issuers` entry names the JWKS URL and
the audience. The verification follows RFC 8725 (JWT best current practices):

- algorithms come from an allow-list of asymmetric ones and are pinned to the key: an
  RSA key verifies RS*/PS*, an EC key the ES* of its curve, an OKP key EdDSA, and a key
  that names its `alg` only that one. `none` and HS256-signed-with-the-public-key cannot
  pass, whatever the token's header says (RFC 8725 §2.1, §3.1);
- `iss`, `aud`, `exp`, `nbf` and `sub` are required, times checked with a small leeway;
- keys are fetched with the broker's `httpx.AsyncClient` (never blocking the event loop),
  cached per JWKS URL, fetched again when a token names an unknown `kid` (the issuer
  rotated its key) but at most once per `refresh_interval`, so a stream of made-up
  `kid`s cannot turn the broker against the issuer, and at the latest after `max_age`;
- keys that cannot be fetched again stay trusted for `stale_grace` past their `max_age`
  (an issuer outage does not lock every workload out at once), then the issuer's tokens
  are refused with 503 (`JwksUnavailable`): a key the issuer may have revoked long ago is
  not trusted forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from broker.core.errors import JwksUnavailable, Unauthenticated
from broker.core.policy import JwtIssuerSpec, WorkloadIdentity

log = logging.getLogger(__name__)

ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_RSA = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_BY_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_OKP_CURVES = frozenset({"Ed25519", "Ed448"})
_REQUIRED_CLAIMS = ["iss", "aud", "exp", "nbf", "sub"]
_MIN_RSA_BITS = 2048
_MAX_JWKS_BYTES = 1 << 20


def algorithms_for(jwk: dict[str, Any]) -> frozenset[str]:
    """The algorithms a JWK may verify: its key type's, narrowed to its own `alg`."""
    kty = jwk.get("kty")
    if kty == "RSA":
        family = _RSA
    elif kty == "EC":
        curve_alg = _EC_BY_CURVE.get(str(jwk.get("crv")))
        family = frozenset({curve_alg}) if curve_alg else frozenset()
    elif kty == "OKP" and jwk.get("crv") in _OKP_CURVES:
        family = frozenset({"EdDSA"})
    else:
        family = frozenset()
    named = jwk.get("alg")
    return family & {named} if isinstance(named, str) else family


def parse_jwks(document: Any) -> dict[str, dict[str, Any]]:
    """Signing keys by `kid` (a key without one is kept under "" when it is the only one)."""
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("not a JWK set")
    usable = [
        entry
        for entry in entries
        if isinstance(entry, dict)
        and entry.get("use", "sig") == "sig"
        and algorithms_for(entry)
        and isinstance(entry.get("kid", ""), str)
    ]
    keys = {str(entry["kid"]): entry for entry in usable if entry.get("kid")}
    if len(usable) == 1 and not usable[0].get("kid"):
        keys[""] = usable[0]
    return keys


@dataclass
class _KeySet:
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    fetched_at: float | None = None
    attempted_at: float | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    built: dict[tuple[str, str], Any] = field(default_factory=dict)


class JwksWorkloadVerifier:
    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        refresh_interval: float = 30.0,
        max_age: float = 3600.0,
        stale_grace: float = 3600.0,
        leeway: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        # Keys past their max age are fetched again even within the kid-refresh interval.
        self._refresh_interval = min(refresh_interval, max_age)
        self._max_age = max_age
        self._stale_grace = stale_grace
        self._leeway = leeway
        self._monotonic = monotonic
        self._sets: dict[str, _KeySet] = {}

    async def subject(self, token: str, issuers: Sequence[JwtIssuerSpec]) -> str:
        return (await self.identify(token, issuers)).subject

    async def identify(self, token: str, issuers: Sequence[JwtIssuerSpec]) -> WorkloadIdentity:
        """The verified issuer and subject of `token` (the issuer is the `iss` the token
        was verified against, so a caller bound to it cannot be spoken for by another)."""
        try:
            header = jwt.get_unverified_header(token)
            # Read unverified only to pick the issuer; everything is verified below.
            claimed = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise Unauthenticated("the workload token is not a well-formed JWT") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise Unauthenticated("the workload token's algorithm is not accepted")
        spec = next((s for s in issuers if s.issuer == claimed.get("iss")), None)
        if spec is None:
            raise Unauthenticated("the workload token's issuer is not trusted")
        key = await self._key(spec, header.get("kid"), alg)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=spec.audience,
                issuer=spec.issuer,
                leeway=self._leeway,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the workload token {_why(exc)}") from exc
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("the workload token has no subject")
        return WorkloadIdentity(spec.issuer, subject)

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- keys -------------------------------------------------------------------------

    async def _key(self, spec: JwtIssuerSpec, kid: object, alg: str) -> Any:
        keyset = self._sets.setdefault(spec.jwks_url, _KeySet())
        if keyset.fetched_at is None or self._monotonic() - keyset.fetched_at > self._max_age:
            await self._refresh(spec, keyset)
        if keyset.fetched_at is None:
            raise JwksUnavailable(f"the keys of issuer {spec.issuer!r} cannot be fetched")
        if self._monotonic() - keyset.fetched_at > self._max_age + self._stale_grace:
            raise JwksUnavailable(
                f"the keys of issuer {spec.issuer!r} could not be refreshed and are too old"
            )
        lookup = kid if isinstance(kid, str) else ""
        if lookup not in keyset.keys:
            await self._refresh(spec, keyset)  # a rotated key, or a made-up kid: rate-limited
        jwk = keyset.keys.get(lookup)
        if jwk is None:
            raise Unauthenticated("the workload token's key id is not in its issuer's key set")
        if alg not in algorithms_for(jwk):
            raise Unauthenticated("the workload token's algorithm does not match its key")
        built = keyset.built.get((lookup, alg))
        if built is None:
            try:
                built = jwt.PyJWK(jwk, algorithm=alg).key
            except (jwt.PyJWTError, ValueError, TypeError) as exc:
                raise Unauthenticated("the issuer's key for this token is unusable") from exc
            if isinstance(built, rsa.RSAPublicKey) and built.key_size < _MIN_RSA_BITS:
                raise Unauthenticated("the issuer's key for this token is too short")
            keyset.built[(lookup, alg)] = built
        return built

    async def _refresh(self, spec: JwtIssuerSpec, keyset: _KeySet) -> None:
        """Fetch the JWKS unless it was tried within `refresh_interval` (concurrent callers
        wait for the one fetch and then find it recent)."""
        async with keyset.lock:
            now = self._monotonic()
            if (
                keyset.attempted_at is not None
                and now - keyset.attempted_at < self._refresh_interval
            ):
                return
            keyset.attempted_at = now
            try:
                keys = await self._fetch(spec.jwks_url)
            except (httpx.HTTPError, ValueError) as exc:
                log.warning(
                    "workload issuer keys unavailable",
                    extra={"issuer": spec.issuer, "error": _describe(exc)},
                )
                return
            keyset.keys = keys
            keyset.fetched_at = now
            keyset.built.clear()
            log.info(
                "workload issuer keys fetched", extra={"issuer": spec.issuer, "keys": len(keys)}
            )

    async def _fetch(self, url: str) -> dict[str, dict[str, Any]]:
        response = await self._client.get(url, headers={"Accept": "application/json"})
        if response.status_code != 200:
            raise ValueError(f"HTTP {response.status_code}")
        if len(response.content) > _MAX_JWKS_BYTES:
            raise ValueError("the key set is too large")
        return parse_jwks(response.json())


def _why(exc: jwt.PyJWTError) -> str:
    """Why a token failed, for the caller: names the check, never the token."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "has expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "is not valid yet"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "is not meant for this audience"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "names another issuer"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"lacks the {exc.claim!r} claim"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "has an invalid signature"
    return "is not valid"


def _describe(exc: Exception) -> str:
    return str(exc) if isinstance(exc, ValueError) else type(exc).__name__
