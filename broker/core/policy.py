"""Who may call the broker and for which realms: the caller policy and pure authorization.

Caller API keys are never held, only their SHA-256; a key is looked up by its hash, so
the comparison never runs over the secret itself.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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
    realms: tuple[str, ...] = ()
    roles: tuple[Role, ...] = ()
    rate_limit: RateLimitSpec | None = None

    @model_validator(mode="after")
    def _one_credential(self) -> CallerSpec:
        if (self.api_key_sha256 is None) == (self.jwt_subject is None):
            raise ValueError("needs exactly one of api_key_sha256 or jwt_subject")
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

    @model_validator(mode="after")
    def _unique(self) -> PolicySpec:
        for label, values in (
            ("caller name", [c.name for c in self.callers]),
            (
                "api_key_sha256",
                [c.api_key_sha256.lower() for c in self.callers if c.api_key_sha256],
            ),
            ("jwt_subject", [c.jwt_subject for c in self.callers if c.jwt_subject]),
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

    def may_use(self, realm: str) -> bool:
        return "*" in self.realms or realm in self.realms

    def has_role(self, role: Role) -> bool:
        # admin implies auditor (DESIGN.md, "Caller policy").
        return role in self.roles or "admin" in self.roles


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class Policy:
    """An immutable, validated policy with lookups by key hash and by workload subject."""

    def __init__(self, spec: PolicySpec) -> None:
        self.spec = spec
        self._by_key_hash: dict[str, Caller] = {}
        self._by_subject: dict[str, Caller] = {}
        default_limit = spec.default_rate_limit
        for entry in spec.callers:
            limit = entry.rate_limit or default_limit
            caller = Caller(
                entry.name,
                frozenset(entry.realms),
                frozenset(entry.roles),
                limit.limit() if limit else None,
            )
            if entry.api_key_sha256:
                self._by_key_hash[entry.api_key_sha256.lower()] = caller
            if entry.jwt_subject:
                self._by_subject[entry.jwt_subject] = caller

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

    def caller_for_subject(self, subject: str) -> Caller | None:
        return self._by_subject.get(subject)

    def __len__(self) -> int:
        return len(self.spec.callers)
