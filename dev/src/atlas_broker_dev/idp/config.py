"""What the development IdP knows at start: realms, their clients, token lifetime.

Plain dataclasses, so tests and ``broker dev`` can build one in code; ``from_yaml`` reads
the small file the CLI takes. Secrets are kept out of ``repr`` and out of every error
message, because both end up in logs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, Literal

import yaml

_TOP_LEVEL_KEYS = frozenset({"token_lifetime", "issuer_base", "admin_token", "realms"})
_CLIENT_KEYS = frozenset({"client_id", "client_secret", "scope", "scopes"})


@dataclasses.dataclass(frozen=True, slots=True)
class DevClient:
    """A confidential client allowed the client-credentials grant in one realm.

    ``scope`` is the scope granted when a request names none (space-separated, as in
    RFC 6749 §3.3). ``scopes`` lists every scope the client may request (its default
    scope counts too); a request for any other is ``invalid_scope``. With ``scopes``
    unset, ``scope`` alone bounds the requests, and with neither any scope is granted.
    """

    client_id: str
    client_secret: str = dataclasses.field(repr=False)
    scope: str | None = None
    scopes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.client_id:
            raise ValueError("client_id must not be empty")
        if not self.client_secret:
            raise ValueError(f"client {self.client_id!r}: client_secret must not be empty")
        if self.scopes is not None and any(not s or " " in s for s in self.scopes):
            raise ValueError(f"client {self.client_id!r}: each of scopes must be one word")

    def allowed_scopes(self) -> frozenset[str] | None:
        """The scopes this client may request; ``None`` when it may request any."""
        default = frozenset((self.scope or "").split())
        if self.scopes is not None:
            return frozenset(self.scopes) | default
        return default if self.scope is not None else None


TokenFormat = Literal["jwt", "opaque"]
AuthMethod = Literal["client_secret_basic", "client_secret_post"]
REALM_PATHS = ("/auth/realms", "/realms")
_REALM_KEYS = frozenset(
    {
        "clients",
        "token_format",
        "discovery",
        "path",
        "auth_methods",
        "discovery_overrides",
        "issuer",
    }
)


@dataclasses.dataclass(frozen=True, slots=True)
class RealmOptions:
    """How one realm looks from outside: what its tokens are and where it lives.

    ``token_format`` ``opaque`` issues random strings instead of signed JWTs (as many
    IdPs do); ``discovery`` False serves no ``/.well-known/openid-configuration``;
    ``path`` ``/realms`` is the Keycloak 17+ layout (``/auth/realms`` before it);
    ``auth_methods`` are the client authentications the token endpoint accepts;
    ``discovery_overrides`` replace members of the discovery document (a test's
    misdirected ``token_endpoint``, say); ``issuer``, when set, is the realm's ``iss``
    whatever URL reached it (an IdP behind a proxy with another public name).
    """

    token_format: TokenFormat = "jwt"
    discovery: bool = True
    path: str = "/auth/realms"
    auth_methods: tuple[AuthMethod, ...] = ("client_secret_basic", "client_secret_post")
    discovery_overrides: Mapping[str, str] = dataclasses.field(default_factory=dict)
    issuer: str | None = None

    def __post_init__(self) -> None:
        if self.token_format not in ("jwt", "opaque"):
            raise ValueError("token_format must be 'jwt' or 'opaque'")
        if self.path not in REALM_PATHS:
            raise ValueError(f"path must be one of {list(REALM_PATHS)}")
        known = {"client_secret_basic", "client_secret_post"}
        if not self.auth_methods or set(self.auth_methods) - known:
            raise ValueError(f"auth_methods must be a non-empty subset of {sorted(known)}")


@dataclasses.dataclass(slots=True)
class IdPConfig:
    """Start-up configuration; the running IdP copies it, so ``/_dev`` changes stay local.

    ``issuer_base`` is the URL put in front of ``/auth/realms/{realm}`` in ``iss``; when
    ``None`` each request's own base URL is used. ``admin_token``, when set, is required
    as ``Authorization: Bearer`` on every ``/_dev`` control endpoint.
    """

    clients: dict[str, list[DevClient]] = dataclasses.field(default_factory=dict)
    realms: dict[str, RealmOptions] = dataclasses.field(default_factory=dict)
    token_lifetime: int = 3600
    issuer_base: str | None = None
    admin_token: str | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check_lifetime(self.token_lifetime)
        for realm, clients in self.clients.items():
            ids = [client.client_id for client in clients]
            if len(ids) != len(set(ids)):
                raise ValueError(f"realm {realm!r}: duplicate client_id")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IdPConfig:
        """Build from the YAML shape: ``token_lifetime``, ``issuer_base``, ``admin_token``,
        and ``realms: {name: {clients: [{client_id, client_secret, scope?, scopes?}]}}``."""
        unknown = set(data) - _TOP_LEVEL_KEYS
        if unknown:
            raise ValueError(f"unknown configuration keys: {sorted(unknown)}")
        realms = data.get("realms") or {}
        if not isinstance(realms, Mapping):
            raise ValueError("realms must be a mapping of realm name to realm")
        return cls(
            clients={str(name): _realm_clients(str(name), realm) for name, realm in realms.items()},
            realms={
                str(name): _realm_options(str(name), realm)
                for name, realm in realms.items()
                if isinstance(realm, Mapping) and set(realm) - {"clients"}
            },
            token_lifetime=data.get("token_lifetime", 3600),
            issuer_base=_optional_str(data, "issuer_base"),
            admin_token=_optional_str(data, "admin_token"),
        )

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> IdPConfig:
        """Read a YAML file of the ``from_dict`` shape; an empty file means no realms."""
        with open(path, encoding="utf-8") as stream:
            data = yaml.safe_load(stream)
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ValueError(f"{os.fspath(path)}: expected a mapping at the top level")
        return cls.from_dict(data)


def _check_lifetime(value: object) -> None:
    # bool is an int subclass; `token_lifetime: yes` is a typo, not one second.
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError("token_lifetime must be a positive integer (seconds)")


def _optional_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def _realm_clients(realm: str, body: object) -> list[DevClient]:
    if body is None:
        return []
    if not isinstance(body, Mapping) or set(body) - _REALM_KEYS:
        raise ValueError(f"realm {realm!r}: expected a mapping of {sorted(_REALM_KEYS)}")
    entries = body.get("clients") or []
    if not isinstance(entries, list):
        raise ValueError(f"realm {realm!r}: clients must be a list")
    return [_client(realm, index, entry) for index, entry in enumerate(entries)]


def _client(realm: str, index: int, entry: object) -> DevClient:
    where = f"realm {realm!r}, client #{index}"
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected a mapping")
    unknown = set(entry) - _CLIENT_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    fields = {key: entry.get(key) for key in _CLIENT_KEYS}
    if not isinstance(fields["client_id"], str) or not isinstance(fields["client_secret"], str):
        raise ValueError(f"{where}: client_id and client_secret must be strings")
    if fields["scope"] is not None and not isinstance(fields["scope"], str):
        raise ValueError(f"{where}: scope must be a string")
    scopes = fields["scopes"]
    if scopes is not None and (
        not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes)
    ):
        raise ValueError(f"{where}: scopes must be a list of strings")
    return DevClient(
        fields["client_id"],
        fields["client_secret"],
        fields["scope"],
        tuple(scopes) if scopes is not None else None,
    )


def _realm_options(realm: str, body: Mapping[str, Any]) -> RealmOptions:
    options = {key: body[key] for key in _REALM_KEYS - {"clients"} if key in body}
    if "auth_methods" in options:
        options["auth_methods"] = tuple(options["auth_methods"] or ())
    try:
        return RealmOptions(**options)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"realm {realm!r}: {exc}") from None
