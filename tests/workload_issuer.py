"""A workload identity issuer for tests: test keys, a JWKS on 127.0.0.1, signed JWTs.

It stands in for a Kubernetes API server's `/openid/v1/jwks` (or any OIDC issuer): the
broker fetches the JWKS over HTTP like it would in a cluster. The server is a small
Starlette app run by uvicorn in a thread of the test process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from atlas_broker_dev.processes import free_port
from threaded_server import ThreadedServer

AUDIENCE = "atlas-broker"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class SigningKey:
    kid: str
    private_key: Any = field(repr=False)
    alg: str

    @classmethod
    def rsa(cls, *, alg: str = "RS256") -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(f"rsa-{uuid.uuid4().hex[:8]}", key, alg)

    @classmethod
    def ec(cls) -> SigningKey:
        return cls(f"ec-{uuid.uuid4().hex[:8]}", ec.generate_private_key(ec.SECP256R1()), "ES256")

    def public_jwk(self, *, with_alg: bool = True) -> dict[str, Any]:
        codec = RSAAlgorithm if self.alg.startswith(("RS", "PS")) else ECAlgorithm
        jwk: dict[str, Any] = codec.to_jwk(self.private_key.public_key(), as_dict=True)
        jwk.update({"kid": self.kid, "use": "sig"})
        if with_alg:
            jwk["alg"] = self.alg
        return jwk

    def public_pem(self) -> bytes:
        pem: bytes = self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem


class WorkloadIssuer:
    """Serves `/jwks` with the published keys and counts the requests for it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.jwks_url = f"{self.issuer}/jwks"
        self.key = SigningKey.rsa()
        self.published: list[SigningKey] = [self.key]
        self.jwks_requests = 0
        self._server: ThreadedServer | None = None

    # -- the server ---------------------------------------------------------------------

    def start(self) -> WorkloadIssuer:
        async def jwks(request: Request) -> JSONResponse:
            self.jwks_requests += 1
            return JSONResponse({"keys": [key.public_jwk() for key in self.published]})

        app = Starlette(routes=[Route("/jwks", jwks)])
        self._server = ThreadedServer(app, name="workload issuer", port=self.port).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def spec(self, *, audience: str = AUDIENCE) -> dict[str, str]:
        """The policy's `jwt_issuers` entry for this issuer."""
        return {"issuer": self.issuer, "jwks_url": self.jwks_url, "audience": audience}

    # -- tokens -------------------------------------------------------------------------

    def claims(self, subject: str, **overrides: Any) -> dict[str, Any]:
        """Valid claims for `subject` (ten minutes), with `overrides` (None removes one)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": [AUDIENCE],
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + 600,
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def sign(
        self, claims: dict[str, Any], *, key: SigningKey | None = None, alg: str | None = None
    ) -> str:
        key = key or self.key
        return jwt.encode(
            claims, key.private_key, algorithm=alg or key.alg, headers={"kid": key.kid}
        )

    def token(self, subject: str, **overrides: Any) -> str:
        return self.sign(self.claims(subject, **overrides))

    def unsigned(self, claims: dict[str, Any]) -> str:
        """`alg: none`: a header, the claims and an empty signature."""
        header = {"alg": "none", "typ": "JWT", "kid": self.key.kid}
        return f"{_segment(header)}.{_segment(claims)}."

    def hs256_with_public_key(self, claims: dict[str, Any]) -> str:
        """The key-confusion forgery: HMAC-SHA256 keyed with the issuer's public key PEM."""
        header = {"alg": "HS256", "typ": "JWT", "kid": self.key.kid}
        signing_input = f"{_segment(header)}.{_segment(claims)}"
        mac = hmac.new(self.key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64url(mac)}"


def _segment(document: dict[str, Any]) -> str:
    return b64url(json.dumps(document, separators=(",", ":")).encode())


def tampered(token: str) -> str:
    """The token with one character in the middle of its signature changed."""
    head, payload, signature = token.split(".")
    middle = len(signature) // 2
    swapped = "A" if signature[middle] != "A" else "B"
    return f"{head}.{payload}.{signature[:middle]}{swapped}{signature[middle + 1 :]}"
