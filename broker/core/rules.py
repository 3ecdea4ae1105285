"""Pure rules of token validity and refresh: functions of their inputs and a time."""

from __future__ import annotations

import hashlib
import math
import re

from broker.core.models import AccessToken

REALM_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_REALM_RE = re.compile(REALM_PATTERN)


def is_valid_realm(name: str) -> bool:
    # fullmatch, so a trailing newline (which `$` tolerates) does not slip through.
    return _REALM_RE.fullmatch(name) is not None


def expires_at(*, issued_at: float, exp: float, expires_in: float) -> float:
    """When a token dies: the earlier of its JWT `exp` and the IdP's `expires_in`."""
    return min(exp, issued_at + expires_in)


def cache_ttl(token: AccessToken, *, now: float, skew: float) -> int:
    """Seconds to keep `token` in the shared store; <= 0 means do not cache it.

    Floors, so the stored copy never outlives the validity the broker promises.
    """
    return math.floor(token.expires_at - now - skew)


def remaining(token: AccessToken, *, now: float, skew: float) -> float:
    """Seconds the broker still treats `token` as valid."""
    return token.expires_at - skew - now


def satisfies(token: AccessToken, *, now: float, skew: float, min_ttl: float) -> bool:
    return remaining(token, now=now, skew=skew) >= min_ttl


def refresh_at(token: AccessToken, *, skew: float, refresh_before: float) -> float:
    """When to fetch the successor: `refresh_before` ahead of expiry, at most half the
    token's lifetime ahead, so short-lived tokens are not refreshed continuously."""
    lead = min(refresh_before, token.lifetime() / 2)
    return token.expires_at - skew - lead


# RFC 6749 section 3.3: a scope token is printable ASCII without space, `"` or a backslash.
SCOPE_PATTERN = r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$"
_SCOPE_RE = re.compile(SCOPE_PATTERN)
MAX_SCOPES = 16


def parse_scopes(raw: str | None) -> tuple[str, ...]:
    """The normalised scope set of a `scope` parameter (space separated): sorted, without
    duplicates; empty for the realm's default token. ValueError names what is wrong."""
    if raw is None:
        return ()
    scopes = sorted(set(raw.split()))
    if len(scopes) > MAX_SCOPES:
        raise ValueError(f"at most {MAX_SCOPES} scopes may be asked for")
    for scope in scopes:
        if _SCOPE_RE.fullmatch(scope) is None:
            raise ValueError("a scope is printable ASCII without quotes or backslashes")
    return tuple(scopes)


def slot(realm: str, scopes: tuple[str, ...] = ()) -> str:
    """The name of one cached token: the realm alone for its default token, else the
    realm and its normalised scope set, space separated (no realm or scope has a space).
    Everything the core keys per token (store keys, single flight, refresh) uses it."""
    return " ".join((realm, *scopes))


def split_slot(name: str) -> tuple[str, tuple[str, ...]]:
    """The realm and the scope set of a slot name."""
    realm, *scopes = name.split(" ")
    return realm, tuple(scopes)


def scope_label(scopes: tuple[str, ...]) -> str:
    """The scope set as audit records and metrics show it ("" for the default token)."""
    return " ".join(scopes)


def realm_key(prefix: str, kind: str, realm: str) -> str:
    """`{prefix}:{kind}:{realm}` with the realm in braces, a Redis Cluster hash tag: every
    key of one realm (token, lock, backoff) lands in the same hash slot. A scoped slot adds
    `:{digest}` of its scope set after the tag, so it shares the realm's hash slot."""
    name, scopes = split_slot(realm)
    if not scopes:
        return f"{prefix}:{kind}:{{{name}}}"
    digest = hashlib.sha256(scope_label(scopes).encode()).hexdigest()[:16]
    return f"{prefix}:{kind}:{{{name}}}:{digest}"


def token_key(prefix: str, realm: str) -> str:
    return realm_key(prefix, "token", realm)


def lock_key(prefix: str, realm: str) -> str:
    return realm_key(prefix, "lock", realm)


def backoff_key(prefix: str, realm: str) -> str:
    return realm_key(prefix, "backoff", realm)


def forced_fetch_key(prefix: str, realm: str) -> str:
    return realm_key(prefix, "forced", realm)
