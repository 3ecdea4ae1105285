"""`VaultSecretSource`: realm credentials from Vault / OpenBao KV v2 through hvac.

Reads `{mount}/{prefix}/realms/{realm}` (GET /v1/{mount}/data/{prefix}/realms/{realm})
and its metadata (GET /v1/{mount}/metadata/...) to notice new versions. Logs in with a
token, AppRole or Kubernetes auth, renews its token before it expires and logs in again
when renewal is impossible. hvac is blocking, so every call runs in a worker thread,
never on the event loop.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import hvac
import hvac.exceptions
import requests
from pydantic import SecretStr

from broker.adapters.token_seal import Keyring
from broker.core.errors import CredentialsInvalid, RealmNotFound, SecretSourceUnavailable
from broker.core.models import RealmCredentials

log = logging.getLogger(__name__)

T = TypeVar("T")

K8S_TOKEN_PATH = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


@dataclass(frozen=True, slots=True)
class VaultAuth:
    """How the broker logs in: a token (dev), AppRole, or Kubernetes service account."""

    token: SecretStr | None = None
    role_id: str | None = None
    secret_id: SecretStr | None = None
    k8s_role: str | None = None
    k8s_mount: str = "kubernetes"
    k8s_token_path: Path = K8S_TOKEN_PATH

    @property
    def can_login_again(self) -> bool:
        return bool((self.role_id and self.secret_id) or self.k8s_role)


@contextlib.contextmanager
def _mapped(realm: str | None) -> Iterator[None]:
    """Translate hvac's errors; `realm` is None for calls that concern no realm (login,
    the token's own lifecycle, the cache key, listings)."""
    try:
        yield
    except hvac.exceptions.InvalidPath as exc:
        # Also raised for a soft-deleted or destroyed version (raise_on_deleted_version).
        what = f"no credentials for realm {realm!r}" if realm else "no such secret"
        raise RealmNotFound(what) from exc
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
        default_verify: str = "auto",
    ) -> None:
        self._client = hvac.Client(url=url, timeout=timeout)
        self._default_verify = default_verify
        self._auth = auth
        self._mount = mount
        self._prefix = prefix.strip("/")
        self._logged_in = False
        # hvac's client is shared by worker threads; logins must not interleave.
        self._login_lock = threading.Lock()

    def path_for(self, realm: str) -> str:
        return self._path(f"realms/{realm}")

    def _path(self, suffix: str) -> str:
        return f"{self._prefix}/{suffix}" if self._prefix else suffix

    # -- authentication -----------------------------------------------------------------

    async def login(self) -> None:
        """Authenticate at start-up; reads log in again by themselves when needed."""
        await anyio.to_thread.run_sync(self._login)

    def _login(self) -> None:
        with self._login_lock, _mapped(None):
            if self._auth.role_id and self._auth.secret_id:
                self._client.auth.approle.login(
                    role_id=self._auth.role_id,
                    secret_id=self._auth.secret_id.get_secret_value(),
                )
            elif self._auth.k8s_role:
                jwt = self._auth.k8s_token_path.read_text().strip()
                self._client.auth.kubernetes.login(
                    role=self._auth.k8s_role, jwt=jwt, mount_point=self._auth.k8s_mount
                )
            elif self._auth.token:
                self._client.token = self._auth.token.get_secret_value()
            else:
                raise SecretSourceUnavailable("no Vault credentials configured")
            self._logged_in = True

    def _call(self, realm: str | None, operation: Callable[[], T]) -> T:
        """Run `operation`, logging in first if needed and once more if Vault refuses our
        token (it expired, or was revoked) and we have a way to get a new one."""
        if not self._logged_in:
            self._login()
        try:
            with _mapped(realm):
                return operation()
        except SecretSourceUnavailable as exc:
            refused = isinstance(
                exc.__cause__, hvac.exceptions.Forbidden | hvac.exceptions.Unauthorized
            )
            if not (refused and self._auth.can_login_again):
                raise
        self._login()
        with _mapped(realm):
            return operation()

    async def keep_token_fresh(self) -> None:
        """Background loop: renew or replace the Vault token for as long as the broker runs."""
        while True:  # noqa: ASYNC110 - a timer between renewals, not a wait for a condition
            await anyio.sleep(await self.maintain_token())

    async def maintain_token(self) -> float:
        """Renew the token when under half its TTL is left, or log in again when it cannot
        be renewed. Returns seconds until the next check is due."""
        return await anyio.to_thread.run_sync(self._maintain_token)

    def _maintain_token(self) -> float:
        try:
            info = self._call(None, lambda: self._client.auth.token.lookup_self())["data"]
        except SecretSourceUnavailable:
            return 10.0
        ttl, creation_ttl = int(info.get("ttl") or 0), int(info.get("creation_ttl") or 0)
        if ttl == 0:  # a root or periodic-less token without expiry
            return 300.0
        if ttl > creation_ttl / 2:
            return max(1.0, (ttl - creation_ttl / 2) / 2)
        try:
            if info.get("renewable"):
                with _mapped(None):
                    self._client.auth.token.renew_self()
            elif self._auth.can_login_again:
                self._login()
        except SecretSourceUnavailable as exc:
            log.warning("vault token renewal failed", extra={"error": exc.detail})
            if self._auth.can_login_again:
                with contextlib.suppress(SecretSourceUnavailable):
                    self._login()
        return 1.0

    # -- realm credentials ----------------------------------------------------------------

    async def credentials(self, realm: str) -> RealmCredentials:
        return await anyio.to_thread.run_sync(self._read, realm)

    def _read(self, realm: str) -> RealmCredentials:
        response = self._call(
            realm,
            lambda: self._client.secrets.kv.v2.read_secret_version(
                path=self.path_for(realm),
                mount_point=self._mount,
                raise_on_deleted_version=True,
            ),
        )
        return _credentials(realm, response, default_verify=self._default_verify)

    async def current_version(self, realm: str) -> int:
        def read() -> int:
            metadata = self._call(
                realm,
                lambda: self._client.secrets.kv.v2.read_secret_metadata(
                    path=self.path_for(realm), mount_point=self._mount
                ),
            )
            return int(metadata["data"]["current_version"])

        return await anyio.to_thread.run_sync(read)

    async def list_realms(self) -> list[str]:
        """Realm names with a secret under `{prefix}/realms/`."""

        def read() -> list[str]:
            try:
                listing = self._call(
                    None,
                    lambda: self._client.secrets.kv.v2.list_secrets(
                        path=self._path("realms"), mount_point=self._mount
                    ),
                )
            except RealmNotFound:
                return []
            keys = listing.get("data", {}).get("keys", [])
            return sorted(key for key in keys if isinstance(key, str) and not key.endswith("/"))

        return await anyio.to_thread.run_sync(read)

    # -- the cache key ------------------------------------------------------------------

    async def cache_keyring(self) -> Keyring:
        """The AES-256 keys that seal tokens in Redis, at `{prefix}/broker/cache-key`:
        `{"current": id, "<id>": base64 key, ...}`. Created on first start; concurrent
        first starts agree through check-and-set (cas=0 creates only if absent)."""
        return await anyio.to_thread.run_sync(self._cache_keyring)

    def _cache_keyring(self) -> Keyring:
        path = self._path("broker/cache-key")
        try:
            return _keyring(self._read_data(path))
        except RealmNotFound:
            pass
        key_id = f"k{secrets.token_hex(4)}"
        fresh = Keyring.generate(key_id)
        document = {"current": key_id, key_id: base64.b64encode(fresh.keys[key_id]).decode()}
        try:
            self._call(
                None,
                lambda: self._client.secrets.kv.v2.create_or_update_secret(
                    path=path, secret=document, cas=0, mount_point=self._mount
                ),
            )
            log.info("created the token cache key in vault", extra={"key_id": key_id})
            return fresh
        except SecretSourceUnavailable as exc:
            if not isinstance(exc.__cause__, hvac.exceptions.InvalidRequest):
                raise
            # Another replica created it first (check-and-set refused ours): use theirs.
            return _keyring(self._read_data(path))

    def _read_data(self, path: str) -> dict[str, Any]:
        response = self._call(
            None,
            lambda: self._client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self._mount, raise_on_deleted_version=True
            ),
        )
        data: dict[str, Any] = response.get("data", {}).get("data") or {}
        return data

    # -- health ---------------------------------------------------------------------------

    async def ping(self) -> None:
        def check() -> None:
            # lookup-self: Vault answers and our token is still good.
            if not self._call(None, self._client.is_authenticated):
                raise SecretSourceUnavailable("the broker's Vault token is not valid")

        await anyio.to_thread.run_sync(check)

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._client.adapter.close)


def _keyring(data: dict[str, Any]) -> Keyring:
    try:
        keys = {kid: base64.b64decode(value) for kid, value in data.items() if kid != "current"}
        return Keyring(str(data["current"]), keys)
    except (KeyError, ValueError, TypeError) as exc:
        raise SecretSourceUnavailable("the token cache key in vault is malformed") from exc


VERIFY_MODES = ("auto", "jwks", "none")
AUTH_METHODS = ("client_secret_basic", "client_secret_post")


def _choice(realm: str, data: dict[str, Any], field: str, allowed: tuple[str, ...]) -> str | None:
    """An optional field that must be one of `allowed` (the message names the field and
    the choices, never the value: a secret pasted into the wrong field stays unsaid)."""
    value = data.get(field)
    if value is None or value == "":
        return None
    if value not in allowed:
        raise CredentialsInvalid(
            f"realm {realm!r}: {field} in the secret store must be one of {', '.join(allowed)}"
        )
    return str(value)


def _credentials(
    realm: str, response: dict[str, Any], *, default_verify: str = "auto"
) -> RealmCredentials:
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
    issuer = data.get("issuer")
    return RealmCredentials(
        realm=realm,
        client_id=client_id,
        client_secret=SecretStr(client_secret),
        version=int(metadata.get("version") or 0),
        token_url=token_url if isinstance(token_url, str) and token_url else None,
        scope=scope if isinstance(scope, str) and scope else None,
        api_url=api_url if isinstance(api_url := data.get("api_url"), str) and api_url else None,
        verify=_choice(realm, data, "verify", VERIFY_MODES) or default_verify,
        auth_method=_choice(realm, data, "auth_method", AUTH_METHODS) or AUTH_METHODS[0],
        issuer=issuer if isinstance(issuer, str) and issuer else None,
    )
