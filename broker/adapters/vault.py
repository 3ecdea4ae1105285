"""`VaultSecretSource`: realm credentials from Vault / OpenBao KV v2 through hvac.

Reads `{mount}/{prefix}/realms/{realm}` (GET /v1/{mount}/data/{prefix}/realms/{realm}).
hvac is blocking, so every call runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import hvac
import hvac.exceptions
import requests
from pydantic import SecretStr

from broker.core.errors import (
    CredentialsInvalid,
    RealmNotFound,
    SecretSourceUnavailable,
)
from broker.core.models import RealmCredentials


@dataclass(frozen=True, slots=True)
class VaultAuth:
    """How the broker logs in: a token (dev), or AppRole."""

    token: SecretStr | None = None
    role_id: str | None = None
    secret_id: SecretStr | None = None


@contextlib.contextmanager
def _mapped(realm: str) -> Iterator[None]:
    try:
        yield
    except hvac.exceptions.InvalidPath as exc:
        # Also raised for a soft-deleted or destroyed version (raise_on_deleted_version).
        raise RealmNotFound(f"no credentials for realm {realm!r}") from exc
    except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized) as exc:
        raise SecretSourceUnavailable("the broker is not allowed to read the secret store") from exc
    except (hvac.exceptions.VaultError, requests.RequestException, OSError) as exc:
        raise SecretSourceUnavailable(f"the secret store failed ({type(exc).__name__})") from exc


class VaultSecretSource:
    def __init__(
        self,
        *,
        url: str,
        auth: VaultAuth,
        mount: str = "secret",
        prefix: str = "atlas",
        timeout: int = 5,
    ) -> None:
        self._client = hvac.Client(url=url, timeout=timeout)
        self._auth = auth
        self._mount = mount
        self._prefix = prefix.strip("/")
        self._logged_in = False

    def path_for(self, realm: str) -> str:
        return f"{self._prefix}/realms/{realm}" if self._prefix else f"realms/{realm}"

    async def login(self) -> None:
        """Authenticate once at start-up (AppRole) or adopt the configured token."""
        await anyio.to_thread.run_sync(self._login)

    def _login(self) -> None:
        with _mapped("-"):
            if self._auth.role_id and self._auth.secret_id:
                self._client.auth.approle.login(
                    role_id=self._auth.role_id,
                    secret_id=self._auth.secret_id.get_secret_value(),
                )
            elif self._auth.token:
                self._client.token = self._auth.token.get_secret_value()
            else:
                raise SecretSourceUnavailable("no Vault credentials configured")
        self._logged_in = True

    async def credentials(self, realm: str) -> RealmCredentials:
        return await anyio.to_thread.run_sync(self._read, realm)

    def _read(self, realm: str) -> RealmCredentials:
        if not self._logged_in:
            self._login()
        with _mapped(realm):
            response = self._client.secrets.kv.v2.read_secret_version(
                path=self.path_for(realm),
                mount_point=self._mount,
                raise_on_deleted_version=True,
            )
        return _credentials(realm, response)

    async def ping(self) -> None:
        def check() -> None:
            if not self._logged_in:
                self._login()
            with _mapped("-"):
                # lookup-self: Vault answers and our token is still good.
                if not self._client.is_authenticated():
                    raise SecretSourceUnavailable("the broker's Vault token is not valid")

        await anyio.to_thread.run_sync(check)

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._client.adapter.close)


def _credentials(realm: str, response: dict[str, Any]) -> RealmCredentials:
    data = response.get("data", {}).get("data") or {}
    metadata = response.get("data", {}).get("metadata") or {}
    if metadata.get("deletion_time") or metadata.get("destroyed"):
        raise RealmNotFound(f"the credentials of realm {realm!r} were deleted")
    client_id = data.get("client_id")
    client_secret = data.get("client_secret")
    if not isinstance(client_id, str) or not client_id:
        raise CredentialsInvalid(f"realm {realm!r} has no client_id in the secret store")
    if not isinstance(client_secret, str) or not client_secret:
        raise CredentialsInvalid(f"realm {realm!r} has no client_secret in the secret store")
    token_url = data.get("token_url")
    scope = data.get("scope")
    return RealmCredentials(
        realm=realm,
        client_id=client_id,
        client_secret=SecretStr(client_secret),
        version=int(metadata.get("version") or 0),
        token_url=token_url if isinstance(token_url, str) and token_url else None,
        scope=scope if isinstance(scope, str) and scope else None,
    )
