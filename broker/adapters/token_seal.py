"""Sealing token values for Redis: AES-256-GCM, with the key prefix, the realm and the
realm's generation bound in as associated data.

A reader of Redis holds no usable token. A writer of Redis cannot move a sealed value:
one copied under another realm's key or another deployment's key prefix, or relabelled
with a later generation (written back after an eviction), fails to open (the associated
data differ) and counts as a miss. Each sealed value names its key id, so the cache key
can be rotated: new values use the current key, values under an older key that is still
in the keyring keep opening.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.core.models import AccessToken

_NONCE_BYTES = 12


@dataclass(frozen=True)
class Keyring:
    """The data keys by id, and which one seals new values."""

    current: str
    keys: dict[str, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise ValueError("the current key id is not in the keyring")
        if any(len(key) != 32 for key in self.keys.values()):
            raise ValueError("cache keys must be 32 bytes (AES-256)")

    @staticmethod
    def generate(key_id: str = "k1") -> Keyring:
        return Keyring(key_id, {key_id: AESGCM.generate_key(bit_length=256)})


def _aad(namespace: str, realm: str, generation: int) -> bytes:
    # NUL separates the parts: neither a key prefix nor a realm name can contain one.
    # "v2": values sealed before the generation was bound (v1, the realm alone) no longer
    # open and count as a miss, costing one IdP request per realm after an upgrade.
    return f"atlas-broker:token:v2\0{namespace}\0{realm}\0{generation}".encode()


class TokenSealer:
    """Seals and opens the token values of one key prefix (`namespace`)."""

    def __init__(self, keyring: Keyring, *, namespace: str) -> None:
        self._current = keyring.current
        self._ciphers = {kid: AESGCM(key) for kid, key in keyring.keys.items()}
        self._namespace = namespace

    def seal(self, realm: str, token: AccessToken, *, generation: int) -> str:
        plaintext = json.dumps(
            {
                "access_token": token.value,
                "expires_at": token.expires_at,
                "issued_at": token.issued_at,
                "scope": token.scope,
                "credential_version": token.credential_version,
            },
            separators=(",", ":"),
        ).encode()
        nonce = os.urandom(_NONCE_BYTES)
        aad = _aad(self._namespace, realm, generation)
        sealed = self._ciphers[self._current].encrypt(nonce, plaintext, aad)
        return f"{self._current}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, realm: str, value: str, *, generation: int) -> AccessToken | None:
        """The token, or None when the value is not one this keyring sealed for `realm`
        at `generation` under this key prefix."""
        kid, _, blob = value.partition(".")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(blob)
            aad = _aad(self._namespace, realm, generation)
            plaintext = cipher.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], aad)
            data: Any = json.loads(plaintext)
            return AccessToken(
                value=str(data["access_token"]),
                expires_at=float(data["expires_at"]),
                issued_at=float(data["issued_at"]),
                scope=data.get("scope"),
                credential_version=int(data.get("credential_version") or 0),
            )
        except (InvalidTag, ValueError, KeyError, TypeError, binascii.Error):
            return None
