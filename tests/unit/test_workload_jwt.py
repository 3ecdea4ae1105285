"""Workload JWT verification: keys fetched, cached, refreshed on an unknown kid at a
bounded rate, and pinned to their own algorithms (the attacks themselves are in
tests/integration/test_identity.py, against a broker process)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest

from broker.adapters.workload_jwt import JwksWorkloadVerifier, algorithms_for, parse_jwks
from broker.core.errors import JwksUnavailable, Unauthenticated
from broker.core.policy import JwtIssuerSpec
from workload_issuer import AUDIENCE, SigningKey

ISSUER = "https://issuer.test"
JWKS_URL = f"{ISSUER}/jwks"
SUBJECT = "system:serviceaccount:payments:ledger"
SPECS = (JwtIssuerSpec(issuer=ISSUER, jwks_url=JWKS_URL, audience=AUDIENCE),)


class Jwks:
    """A JWKS endpoint behind httpx.MockTransport: publishes keys, counts fetches, fails
    on request."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.fetches = 0
        self.failing = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        if self.failing:
            return httpx.Response(503)
        return httpx.Response(200, json={"keys": [key.public_jwk() for key in self.keys]})


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": SUBJECT, "nbf": now, "exp": now + 600}
    return {**base, **overrides}


def sign(key: SigningKey, *, alg: str | None = None, **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), key.private_key, alg or key.alg, {"kid": key.kid})


def verifier(jwks: Jwks, clock: Monotonic | None = None) -> JwksWorkloadVerifier:
    client = httpx.AsyncClient(transport=httpx.MockTransport(jwks.handle))
    return JwksWorkloadVerifier(client, monotonic=clock or Monotonic())


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return SigningKey.rsa()


async def test_valid_token_yields_its_subject(rsa_key: SigningKey) -> None:
    """A token signed by a published key, for our audience, yields its `sub`."""
    assert SUBJECT == await verifier(Jwks(rsa_key)).subject(sign(rsa_key), SPECS)


async def test_es256_token_from_an_ec_key_is_accepted() -> None:
    """An EC P-256 key verifies ES256 tokens."""
    key = SigningKey.ec()
    assert SUBJECT == await verifier(Jwks(key)).subject(sign(key), SPECS)


async def test_keys_are_fetched_once_for_many_tokens(rsa_key: SigningKey) -> None:
    """The JWKS is cached: ten verifications make one fetch."""
    jwks = Jwks(rsa_key)
    subject_of = verifier(jwks)
    for _ in range(10):
        await subject_of.subject(sign(rsa_key), SPECS)
    assert 1 == jwks.fetches


async def test_unknown_kid_refreshes_and_finds_a_rotated_key(rsa_key: SigningKey) -> None:
    """A token from a key published after the first fetch is verified after one refresh."""
    jwks, clock = Jwks(rsa_key), Monotonic()
    subject_of = verifier(jwks, clock)
    await subject_of.subject(sign(rsa_key), SPECS)
    rotated = SigningKey.rsa()
    jwks.keys.append(rotated)
    clock.now += 31
    assert (SUBJECT, 2) == (await subject_of.subject(sign(rotated), SPECS), jwks.fetches)


async def test_unknown_kid_refresh_is_rate_limited(rsa_key: SigningKey) -> None:
    """Made-up kids within 30 s of the last fetch cause no fetch and are refused."""
    jwks = Jwks(rsa_key)
    subject_of = verifier(jwks)
    await subject_of.subject(sign(rsa_key), SPECS)
    for _ in range(5):
        with pytest.raises(Unauthenticated):
            await subject_of.subject(sign(SigningKey.rsa()), SPECS)
    assert 1 == jwks.fetches


async def test_concurrent_unknown_kids_share_one_refresh(rsa_key: SigningKey) -> None:
    """Many tokens with one new kid, verified at once, make a single refresh."""
    import asyncio

    jwks, clock = Jwks(rsa_key), Monotonic()
    subject_of = verifier(jwks, clock)
    await subject_of.subject(sign(rsa_key), SPECS)
    rotated = SigningKey.rsa()
    jwks.keys.append(rotated)
    clock.now += 31
    token = sign(rotated)
    results = await asyncio.gather(*(subject_of.subject(token, SPECS) for _ in range(20)))
    assert ([SUBJECT] * 20, 2) == (results, jwks.fetches)


async def test_rsa_key_does_not_verify_an_es256_header(rsa_key: SigningKey) -> None:
    """A token claiming ES256 under an RSA key's kid is refused: algorithms are pinned."""
    forged = jwt.encode(claims(), SigningKey.ec().private_key, "ES256", {"kid": rsa_key.kid})
    with pytest.raises(Unauthenticated, match="does not match its key"):
        await verifier(Jwks(rsa_key)).subject(forged, SPECS)


async def test_key_naming_rs256_refuses_ps256(rsa_key: SigningKey) -> None:
    """A JWK whose `alg` is RS256 does not verify a PS256 token signed by the same key."""
    with pytest.raises(Unauthenticated, match="does not match its key"):
        await verifier(Jwks(rsa_key)).subject(sign(rsa_key, alg="PS256"), SPECS)


async def test_missing_nbf_is_refused(rsa_key: SigningKey) -> None:
    """`nbf` is required: a token without it is refused."""
    token = jwt.encode(
        {k: v for k, v in claims().items() if k != "nbf"},
        rsa_key.private_key,
        "RS256",
        {"kid": rsa_key.kid},
    )
    with pytest.raises(Unauthenticated, match="'nbf'"):
        await verifier(Jwks(rsa_key)).subject(token, SPECS)


async def test_small_clock_skew_is_tolerated(rsa_key: SigningKey) -> None:
    """A token expired 10 s ago is still accepted (30 s leeway)."""
    token = sign(rsa_key, exp=int(time.time()) - 10, nbf=int(time.time()) - 600)
    assert SUBJECT == await verifier(Jwks(rsa_key)).subject(token, SPECS)


async def test_unreachable_jwks_with_nothing_cached_is_unavailable(rsa_key: SigningKey) -> None:
    """When the issuer's keys were never fetched and cannot be, the answer is 503, not 401."""
    jwks = Jwks(rsa_key)
    jwks.failing = True
    with pytest.raises(JwksUnavailable):
        await verifier(jwks).subject(sign(rsa_key), SPECS)


async def test_cached_keys_survive_a_failed_refresh(rsa_key: SigningKey) -> None:
    """Past max_age a failed refetch keeps the keys already known (within the grace)."""
    jwks, clock = Jwks(rsa_key), Monotonic()
    subject_of = verifier(jwks, clock)
    await subject_of.subject(sign(rsa_key), SPECS)
    jwks.failing = True
    clock.now += 3601
    assert (SUBJECT, 2) == (await subject_of.subject(sign(rsa_key), SPECS), jwks.fetches)


async def test_stale_keys_fail_closed_after_the_grace(rsa_key: SigningKey) -> None:
    """Keys not refreshed for max_age + stale_grace are no longer trusted: 503."""
    jwks, clock = Jwks(rsa_key), Monotonic()
    subject_of = verifier(jwks, clock)
    await subject_of.subject(sign(rsa_key), SPECS)
    jwks.failing = True
    clock.now += 3600 + 3600 + 1
    with pytest.raises(JwksUnavailable):
        await subject_of.subject(sign(rsa_key), SPECS)


def test_jwks_without_signing_keys_yields_none() -> None:
    """Encryption keys and symmetric keys in a JWKS are never used to verify."""
    document = {
        "keys": [
            {**SigningKey.rsa().public_jwk(), "use": "enc"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        ]
    }
    assert {} == parse_jwks(document)


def test_ec_key_is_pinned_to_its_curve() -> None:
    """A P-256 key verifies ES256 only."""
    assert frozenset({"ES256"}) == algorithms_for(SigningKey.ec().public_jwk(with_alg=False))
