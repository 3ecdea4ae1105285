"""Who may call the broker and for which realms: the caller policy and pure authorization.

A caller proves itself with one of four credentials, each looked up in its own index:

- an API key, by its SHA-256 (keys are never held, so no comparison runs over a secret);
- a workload JWT, by (issuer, subject): a caller is bound to the issuer that may speak
  for it, so a second trusted issuer (another cluster) minting the same `sub` is nobody.
  With one issuer configured `jwt_issuer` may be left out; with more it is required;
- a client certificate, by its URI SAN (`spiffe_id`) or its subject (`cert_subject`,
  RFC 4514 as `cryptography` renders it).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from broker.core import rules

Role = Literal["auditor", "admin"]


class RateLimitSpec(BaseModel):
    """`rate_limit:` of a caller or `default_rate_limit:`: a steady rate and a burst."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_second: float = Field(gt=0, le=1_000_000)
    burst: int | None = Field(default=None, ge=1, le=1_000_000)

    def limit(self) -> RateLimit:
        # Without a burst, one second's worth of requests may arrive at once.
        return RateLimit(self.per_second, self.burst or max(1, math.ceil(self.per_second)))


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`burst` requests at once, then one every `1 / per_second` seconds."""

    per_second: float
    burst: int


class CallerSpec(BaseModel):
    """One `callers:` entry of the policy file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    api_key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    jwt_subject: str | None = Field(default=None, min_length=1)
    jwt_issuer: str | None = Field(default=None, min_length=1)
    spiffe_id: str | None = Field(default=None, pattern=r"^spiffe://[^/\s]+(/\S*)?$")
    cert_subject: str | None = Field(default=None, min_length=1, max_length=1024)
    realms: tuple[str, ...] = ()
    # Scopes the caller may ask for (`?scope=`); absent: only the realm's default token.
    scopes: tuple[Annotated[str, Field(pattern=rules.SCOPE_PATTERN)], ...] = ()
    roles: tuple[Role, ...] = ()
    rate_limit: RateLimitSpec | None = None

    @model_validator(mode="after")
    def _one_credential(self) -> CallerSpec:
        given = [
            name
            for name in ("api_key_sha256", "jwt_subject", "spiffe_id", "cert_subject")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "needs exactly one of api_key_sha256, jwt_subject, spiffe_id or cert_subject"
            )
        if self.jwt_issuer is not None and self.jwt_subject is None:
            raise ValueError("jwt_issuer belongs to a jwt_subject entry")
        return self


class JwtIssuerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str
    jwks_url: str
    audience: str


class PolicySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    callers: tuple[CallerSpec, ...] = ()
    jwt_issuers: tuple[JwtIssuerSpec, ...] = ()
    default_rate_limit: RateLimitSpec | None = None

    def issuer_of(self, entry: CallerSpec) -> str | None:
        """The issuer a workload entry is bound to: its own, or the only one configured."""
        if entry.jwt_issuer is not None:
            return entry.jwt_issuer
        return self.jwt_issuers[0].issuer if len(self.jwt_issuers) == 1 else None

    @model_validator(mode="after")
    def _bound_to_an_issuer(self) -> PolicySpec:
        issuers = [spec.issuer for spec in self.jwt_issuers]
        if len(set(issuers)) != len(issuers):
            raise ValueError("jwt_issuers: duplicate issuer")
        for index, entry in enumerate(self.callers):
            if entry.jwt_issuer is not None and entry.jwt_issuer not in issuers:
                raise ValueError(
                    f"callers.{index} ({entry.name}): jwt_issuer is not listed in jwt_issuers"
                )
            if entry.jwt_subject is not None and entry.jwt_issuer is None and len(issuers) > 1:
                raise ValueError(
                    f"callers.{index} ({entry.name}): jwt_issuer is required when more than "
                    "one jwt_issuers entry is configured"
                )
        return self

    @model_validator(mode="after")
    def _unique(self) -> PolicySpec:
        for label, values in (
            ("caller name", [c.name for c in self.callers]),
            (
                "api_key_sha256",
                [c.api_key_sha256.lower() for c in self.callers if c.api_key_sha256],
            ),
            (
                "jwt_subject for its issuer",
                [f"{self.issuer_of(c)} {c.jwt_subject}" for c in self.callers if c.jwt_subject],
            ),
            ("spiffe_id", [c.spiffe_id for c in self.callers if c.spiffe_id]),
            ("cert_subject", [c.cert_subject for c in self.callers if c.cert_subject]),
        ):
            seen: set[str] = set()
            for index, value in enumerate(values):
                if value in seen:
                    raise ValueError(f"callers.{index}: duplicate {label}")
                seen.add(value)
        return self


class PolicyError(ValueError):
    """A policy document that cannot be used; the message names the offending entry."""


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller and what it may do."""

    name: str
    realms: frozenset[str]
    roles: frozenset[str]
    rate_limit: RateLimit | None = None
    scopes: frozenset[str] = frozenset()

    def may_use(self, realm: str) -> bool:
        return "*" in self.realms or realm in self.realms

    def may_ask(self, scopes: tuple[str, ...]) -> bool:
        """Whether the caller may ask for this scope set (none: the default token)."""
        return self.scopes.issuperset(scopes)

    def has_role(self, role: Role) -> bool:
        # admin implies auditor.
        return role in self.roles or "admin" in self.roles

    def visible_realms(self) -> frozenset[str] | None:
        """The realms whose audit events and status this auditor or admin may see; None
        for all (`*`, or an entry that lists no realms: the role alone)."""
        if "*" in self.realms or not self.realms:
            return None
        return self.realms

    def may_see(self, realm: str | None) -> bool:
        visible = self.visible_realms()
        return visible is None or realm in visible


@dataclass(frozen=True, slots=True)
class WorkloadIdentity:
    """Who a verified workload JWT speaks for: its issuer and its subject."""

    issuer: str
    subject: str


@dataclass(frozen=True, slots=True)
class CertificateIdentity:
    """What a verified client certificate names: its URI SANs and its subject."""

    uris: tuple[str, ...]
    subject: str


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class Policy:
    """An immutable, validated policy with lookups by key hash and by workload subject."""

    def __init__(self, spec: PolicySpec) -> None:
        self.spec = spec
        self._by_key_hash: dict[str, Caller] = {}
        self._by_workload: dict[tuple[str | None, str], Caller] = {}
        self._by_spiffe_id: dict[str, Caller] = {}
        self._by_cert_subject: dict[str, Caller] = {}
        default_limit = spec.default_rate_limit
        for entry in spec.callers:
            limit = entry.rate_limit or default_limit
            caller = Caller(
                entry.name,
                frozenset(entry.realms),
                frozenset(entry.roles),
                limit.limit() if limit else None,
                scopes=frozenset(entry.scopes),
            )
            if entry.api_key_sha256:
                self._by_key_hash[entry.api_key_sha256.lower()] = caller
            if entry.jwt_subject:
                self._by_workload[(spec.issuer_of(entry), entry.jwt_subject)] = caller
            if entry.spiffe_id:
                self._by_spiffe_id[entry.spiffe_id] = caller
            if entry.cert_subject:
                self._by_cert_subject[entry.cert_subject] = caller

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> Policy:
        try:
            return cls(PolicySpec.model_validate(data or {}))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            if not where and isinstance(first.get("ctx", {}).get("error"), ValueError):
                raise PolicyError(str(first["ctx"]["error"])) from None  # names its entry
            raise PolicyError(f"{where or 'policy'}: {first['msg']}") from None

    @classmethod
    def empty(cls) -> Policy:
        return cls(PolicySpec())

    def caller_for_key(self, api_key: str) -> Caller | None:
        return self._by_key_hash.get(hash_key(api_key))

    def caller_for_workload(self, identity: WorkloadIdentity) -> Caller | None:
        return self._by_workload.get((identity.issuer, identity.subject))

    def caller_for_certificate(self, identity: CertificateIdentity) -> Caller | None:
        """The caller whose `spiffe_id` is one of the URI SANs, else whose `cert_subject`
        is the certificate's subject."""
        for uri in identity.uris:
            caller = self._by_spiffe_id.get(uri)
            if caller is not None:
                return caller
        return self._by_cert_subject.get(identity.subject)

    def __len__(self) -> int:
        return len(self.spec.callers)
