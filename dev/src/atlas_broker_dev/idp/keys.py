"""Per-realm RSA signing keys, generated in memory at start and published as a JWKS.

Keys never touch disk: a restarted development IdP gets new keys, which is exactly the
key-rollover case a broker verifying signatures against the JWKS has to survive.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


@dataclasses.dataclass(frozen=True, slots=True)
class RealmKey:
    """One realm's RS256 signing key and its public JWK."""

    kid: str
    private_key: rsa.RSAPrivateKey = dataclasses.field(repr=False)
    public_jwk: dict[str, str]

    @classmethod
    def generate(cls) -> RealmKey:
        """A fresh RSA 2048 key whose ``kid`` is its RFC 7638 thumbprint."""
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        n, e = str(jwk["n"]), str(jwk["e"])
        kid = _thumbprint(n=n, e=e)
        public_jwk = {"kid": kid, "kty": "RSA", "alg": "RS256", "use": "sig", "n": n, "e": e}
        return cls(kid=kid, private_key=private_key, public_jwk=public_jwk)

    def sign(self, claims: Mapping[str, Any]) -> str:
        """An RS256 JWS compact token with this key's ``kid`` in the header, as Keycloak sends."""
        return jwt.encode(
            dict(claims), self.private_key, algorithm="RS256", headers={"kid": self.kid}
        )


def _thumbprint(*, n: str, e: str) -> str:
    # RFC 7638 §3.2: the required members in lexicographic order, no whitespace.
    canonical = json.dumps({"e": e, "kty": "RSA", "n": n}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
