"""Access-token claims shaped like Keycloak's, and the broken tokens the faults hand out.

Pure functions of their inputs, so the token endpoint stays a thin translation of HTTP
and each forged variant can be reasoned about on its own.
"""

from __future__ import annotations

import base64
import json
import secrets
import string
import uuid
from collections.abc import Mapping
from typing import Any

from atlas_broker_dev.idp.config import DevClient

# Fixed namespace so a client's `sub` is the same across restarts of the development IdP.
_SUBJECT_NAMESPACE = uuid.UUID("6f0d3b8e-2c55-4d0a-9a43-6d1f3c0b7e21")


def realm_issuer(base_url: str, realm: str, path: str = "/auth/realms") -> str:
    """Keycloak's issuer URL of a realm: under ``/auth/realms`` before Keycloak 17,
    ``/realms`` since."""
    return f"{base_url.rstrip('/')}{path}/{realm}"


def opaque_token() -> str:
    """A random access token that is not a JWT, like the Atlas document's example."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(30))


def client_subject(realm: str, client_id: str) -> str:
    """The stable ``sub`` of a client's service account: one uuid per realm and client."""
    return str(uuid.uuid5(_SUBJECT_NAMESPACE, f"{realm}\x00{client_id}"))


def access_token_claims(
    *, issuer: str, realm: str, client: DevClient, scope: str, issued_at: int, lifetime: int
) -> dict[str, Any]:
    """The claims Keycloak puts in a client-credentials access token; ``jti`` is always new."""
    return {
        "exp": issued_at + lifetime,
        "iat": issued_at,
        "jti": str(uuid.uuid4()),
        "iss": issuer,
        "aud": "account",
        "sub": client_subject(realm, client.client_id),
        "typ": "Bearer",
        "azp": client.client_id,
        "acr": "1",
        "realm_access": {"roles": [f"default-roles-{realm}"]},
        "scope": scope,
        "client_id": client.client_id,
        "preferred_username": f"service-account-{client.client_id}",
    }


def tamper_signature(token: str) -> str:
    """The same token with one signature byte flipped, so verification must fail.

    Flipping a decoded byte (not a base64 character) guarantees the bytes change: the last
    base64url character of a signature carries padding bits that decoders may ignore.
    """
    head, body, signature = token.split(".")
    raw = bytearray(_b64decode(signature))
    raw[len(raw) // 2] ^= 0xFF
    return f"{head}.{body}.{_b64encode(bytes(raw))}"


def unsigned_token(claims: Mapping[str, Any]) -> str:
    """An RFC 7519 §6 unsecured JWT (``alg: none``, empty signature) carrying ``claims``."""
    header = {"alg": "none", "typ": "JWT"}
    return f"{_b64json(header)}.{_b64json(dict(claims))}."


def _b64json(value: Mapping[str, Any]) -> str:
    return _b64encode(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
