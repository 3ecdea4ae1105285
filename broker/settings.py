"""Settings: `BROKER_*` environment variables, optionally a YAML file named by
`BROKER_CONFIG`; the environment wins. The README's configuration table lists
every variable with its default."""

from __future__ import annotations

import ipaddress
import os
import tempfile
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from broker.core.origins import allowed_origins, origin_of, parse_origins


class PlaceholderSecret(ValueError):
    """A well-known placeholder where a real secret belongs (outside dev)."""


_PLACEHOLDERS = {"changeme", "change-me", "secret", "root", "password", "xxx", "todo"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BROKER_", extra="forbid", frozen=True)

    env: Literal["production", "dev"] = "production"
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    # `/metrics` on its own listener (unset: on the main port), for a NetworkPolicy.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    vault_addr: str | None = None
    vault_token: SecretStr | None = None
    vault_role_id: str | None = None
    vault_secret_id: SecretStr | None = None
    vault_k8s_role: str | None = None
    vault_k8s_mount: str = "kubernetes"
    vault_k8s_token_path: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    vault_kv_mount: str = Field(default="secret", min_length=1)
    vault_prefix: str = "atlas"
    vault_timeout: int = Field(default=5, ge=1, le=60)
    vault_poll_seconds: float = Field(default=30.0, gt=0, le=3600)

    idp_url: str | None = None
    # Origins besides BROKER_IDP_URL's that a realm's token_url may use (comma-separated
    # scheme://host[:port]); normalised by the validator below.
    idp_allowed_origins: str = ""
    # How a realm's tokens are checked when its secret names no `verify`.
    idp_verify: Literal["auto", "jwks", "none"] = "auto"
    # Where a realm lives under BROKER_IDP_URL: `/realms/{realm}` for Keycloak 17+.
    idp_realm_path: str = Field(
        default="/auth/realms/{realm}", pattern=r"^/[A-Za-z0-9._~/-]*\{realm\}[A-Za-z0-9._~/-]*$"
    )
    idp_timeout: float = Field(default=10.0, gt=0, le=120)
    idp_backoff_base: float = Field(default=1.0, gt=0, le=60)
    idp_backoff_max: float = Field(default=60.0, gt=0, le=3600)

    # The Atlas API base for the forward proxy (a realm's secret may name its own api_url);
    # a forwarded call's time limit, and the largest body forwarded.
    api_url: str | None = None
    forward_timeout: float = Field(default=30.0, gt=0, le=600)
    forward_max_body: int = Field(default=10 << 20, ge=0, le=1 << 30)

    redis_url: str = "redis://localhost:6379/0"
    key_prefix: str = Field(default="atlas-broker", min_length=1, pattern=r"^[A-Za-z0-9._:-]+$")

    policy_file: Path | None = None

    audit_retention_days: int = Field(default=30, ge=1, le=3650)
    audit_spool_dir: Path = Field(
        default_factory=lambda: Path(tempfile.gettempdir()) / "atlas-broker-audit"
    )
    audit_required: bool = False
    # Bounds of the audit trail: stream length (approximate trim, beside the age cap),
    # spool file size, and events held in memory while neither Redis nor the spool takes them.
    audit_max_events: int = Field(default=10_000_000, ge=1)
    audit_spool_max_bytes: int = Field(default=1 << 30, ge=4096)
    audit_backlog_max_events: int = Field(default=100_000, ge=1)
    audit_file: Path | None = None

    expiry_skew: int = Field(default=30, ge=0, le=600)
    refresh_before: int = Field(default=300, ge=0, le=3600)
    # At most one fetch per realm in this many seconds forced by a min_ttl above the
    # newest token's remaining life (shared by the replicas through the store).
    forced_fetch_interval: float = Field(default=10.0, gt=0, le=3600)
    max_header_bytes: int = Field(default=16384, ge=1024, le=1048576)
    # The listener's limits (broker/http/server.py): a request head must arrive whole
    # within `header_timeout` seconds; bodies past `max_body_bytes` are 413.
    header_timeout: float = Field(default=10.0, gt=0, le=300)
    max_body_bytes: int = Field(default=1048576, ge=1024, le=1 << 30)
    max_connections: int = Field(default=1000, ge=1, le=1_000_000)
    # Peers (CIDRs, comma-separated) whose X-Forwarded-For is believed for the source address.
    trusted_proxies: str = ""
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    docs: bool = False
    # Workload issuers' keys: fetched again after `jwks_max_age` seconds; when that fails
    # they stay trusted `jwks_stale_grace` seconds more, then their tokens get 503.
    jwks_max_age: float = Field(default=3600.0, gt=0, le=86400)
    jwks_stale_grace: float = Field(default=3600.0, ge=0, le=7 * 86400)

    @field_validator(
        "vault_token", "vault_role_id", "vault_secret_id", "vault_k8s_role", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # An empty variable (a chart value left blank) means "not configured".
        return None if value == "" else value

    @field_validator("vault_addr", "idp_url", "api_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        if value is not None:
            origin_of(value)  # a host, no user info, a valid port
        return value.rstrip("/") if value else value

    @field_validator("idp_allowed_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        return ",".join(parse_origins(value))

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        ha = ("redis+sentinel://", "redis+cluster://", "rediss+sentinel://", "rediss+cluster://")
        if not value.startswith(("redis://", "rediss://", "unix://", "memory://", *ha)):
            raise ValueError(
                "must be a redis://, rediss://, unix://, redis(s)+sentinel://,"
                " redis(s)+cluster:// or memory:// URL"
            )
        if value.startswith(ha):
            from broker.adapters.redis_connect import parse_redis_url

            parse_redis_url(value)  # a bad host list or service name stops start-up
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: str) -> str:
        for part in filter(None, (p.strip() for p in value.split(","))):
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(f"not an address or CIDR: {part!r}") from None
        return value

    @field_validator("tls_cert_file", "tls_key_file", "tls_client_ca_file", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _tls_files_together(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("BROKER_TLS_CERT_FILE and BROKER_TLS_KEY_FILE go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("BROKER_TLS_CLIENT_CA_FILE needs BROKER_TLS_CERT_FILE")
        for path in (self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file):
            if path is not None and not path.is_file():
                raise ValueError(f"no such file: {path}")
        return self

    @model_validator(mode="after")
    def _durable_audit_needs_redis(self) -> Settings:
        if self.audit_required and self.uses_memory_store:
            raise ValueError("BROKER_AUDIT_REQUIRED needs a Redis audit stream, not memory://")
        return self

    @model_validator(mode="after")
    def _no_placeholder_secrets(self) -> Settings:
        if self.env != "dev":
            for name in ("vault_token", "vault_secret_id"):
                secret = getattr(self, name)
                if secret is not None and secret.get_secret_value().lower() in _PLACEHOLDERS:
                    raise PlaceholderSecret(f"BROKER_{name.upper()}: a placeholder value")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("BROKER_CONFIG")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    @property
    def allowed_idp_origins(self) -> frozenset[str]:
        """Every origin a realm URL may use: BROKER_IDP_URL's and the listed ones."""
        return allowed_origins(self.idp_url, filter(None, self.idp_allowed_origins.split(",")))

    @property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        parts = (p.strip() for p in self.trusted_proxies.split(","))
        return tuple(ipaddress.ip_network(part, strict=False) for part in parts if part)

    @property
    def allowed_api_origins(self) -> frozenset[str]:
        """Every origin a realm's api_url may use: the IdP's allowed ones and BROKER_API_URL's."""
        extra = {origin_of(self.api_url)} if self.api_url else set()
        return self.allowed_idp_origins | extra

    @property
    def uses_memory_store(self) -> bool:
        return self.redis_url.startswith("memory://")


class SettingsError(ValueError):
    """Settings that stop start-up; the message is one line naming the setting."""


def _check_config_file(config_file: str) -> None:
    path = Path(config_file)
    if not path.is_file():
        raise SettingsError(f"BROKER_CONFIG: no such file: {config_file}")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SettingsError(
            f"BROKER_CONFIG: {config_file} is not readable YAML ({type(exc).__name__})"
        ) from None
    if document is not None and not isinstance(document, dict):
        raise SettingsError(f"BROKER_CONFIG: {config_file} must hold a mapping of settings")


def load_settings(**overrides: object) -> Settings:
    config_file = os.environ.get("BROKER_CONFIG")
    if config_file:
        _check_config_file(config_file)
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "_".join(str(part) for part in first["loc"]).upper()
        if not name and isinstance(first.get("ctx", {}).get("error"), PlaceholderSecret):
            raise SettingsError(str(first["ctx"]["error"])) from None
        label = f"BROKER_{name}" if name else "settings"
        raise SettingsError(f"{label}: {first['msg']}") from None
