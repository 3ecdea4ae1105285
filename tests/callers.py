"""Caller policies for tests: keys that are recorded in the leak watch, files written
atomically (a new inode, as a Kubernetes ConfigMap update does)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from broker.core.policy import hash_key
from stack import LeakWatch, Stack

K = TypeVar("K")


@dataclass
class PolicyWriter:
    path: Path
    leak_watch: LeakWatch
    callers: list[dict[str, Any]] = field(default_factory=list)
    jwt_issuers: list[dict[str, str]] = field(default_factory=list)
    default_rate_limit: dict[str, float] | None = None

    def key_caller(
        self,
        name: str,
        *,
        realms: tuple[str, ...] = (),
        roles: tuple[str, ...] = (),
        rate_limit: dict[str, float] | None = None,
    ) -> str:
        """Add a caller with a new API key; returns the key."""
        key = secrets.token_urlsafe(32)
        self.leak_watch.add(key)
        entry: dict[str, Any] = {"name": name, "api_key_sha256": hash_key(key)}
        entry.update({"realms": list(realms)} if realms else {})
        entry.update({"roles": list(roles)} if roles else {})
        entry.update({"rate_limit": rate_limit} if rate_limit else {})
        self.callers.append(entry)
        return key

    def subject_caller(
        self, name: str, subject: str, *, realms: tuple[str, ...], issuer: str | None = None
    ) -> None:
        entry: dict[str, Any] = {"name": name, "jwt_subject": subject, "realms": list(realms)}
        entry.update({"jwt_issuer": issuer} if issuer else {})
        self.callers.append(entry)

    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = {"callers": self.callers}
        if self.jwt_issuers:
            document["jwt_issuers"] = self.jwt_issuers
        if self.default_rate_limit:
            document["default_rate_limit"] = self.default_rate_limit
        return document

    def write(self, text: str | None = None) -> Path:
        """Replace the file atomically with the policy (or with `text`, broken or not)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staged = self.path.with_name(self.path.name + ".staged")
        staged.write_text(text if text is not None else yaml.safe_dump(self.document()))
        os.replace(staged, self.path)
        return self.path


def policy_path(stack: Stack) -> Path:
    """Where a module's own caller policy lives (BROKER_POLICY_FILE for its brokers)."""
    return stack.log_dir / "policy.yaml"


def written_policy(stack: Stack, make: Callable[[PolicyWriter], K]) -> K:
    """Write a policy with the callers `make` adds; returns what `make` returns (the keys)."""
    policy = PolicyWriter(policy_path(stack), stack.leak_watch)
    made = make(policy)
    policy.write()
    return made
