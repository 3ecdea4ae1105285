"""Sealing token values for Redis: AES-256-GCM, the realm bound in as associated data.

A reader of Redis holds no usable token, and a value copied under another realm's key
fails to open (the associated data differ) and counts as a miss. Each sealed value names
its key id, so the cache key can be rotated: new values use the current key, values under
an older key that is still in the keyring keep opening.
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


def _aad(realm: str) -> bytes:
    return f"atlas-broker:token:{realm}".encode()


class TokenSealer:
    def __init__(self, keyring: Keyring) -> None:
        self._current = keyring.current
        self._ciphers = {kid: AESGCM(key) for kid, key in keyring.keys.items()}

    def seal(self, realm: str, token: AccessToken) -> str:
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
        sealed = self._ciphers[self._current].encrypt(nonce, plaintext, _aad(realm))
        return f"{self._current}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, realm: str, value: str) -> AccessToken | None:
        """The token, or None when the value is not one this keyring sealed for `realm`."""
        kid, _, blob = value.partition(".")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(blob)
            plaintext = cipher.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad(realm))
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
