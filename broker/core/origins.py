"""Where the broker may send a realm's client secret: the allowed IdP origins (pure).

A realm's secret in Vault may name its own `token_url` (and, later, other per-realm URLs
such as an API base). Whoever can write Vault must still not decide where the client
secret goes, or whose keys vouch for a token: every such URL must have an origin the
operator configured, `BROKER_IDP_URL`'s or one of `BROKER_IDP_ALLOWED_ORIGINS`. An origin
is `scheme://host[:port]` (RFC 6454), compared after normalising case and default ports.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from broker.core.errors import IdPOriginNotAllowed

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str:
    """`scheme://host[:port]` of an http(s) URL, lower-cased, default port dropped.

    Raises ValueError for anything else (another scheme, no host, user info, a bad
    port): such a URL has no origin the broker could allow.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{_head(url)!r} is not an http(s) URL") from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{_head(url)!r} is not an http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("an IdP URL must not carry user info")
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def parse_origins(text: str) -> tuple[str, ...]:
    """A comma-separated list of `scheme://host[:port]`, each normalised; ValueError
    names the first entry that is not an origin (a path, a query, another scheme)."""
    origins: list[str] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        parts = urlsplit(entry)
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(
                f"{_head(entry)!r} followed by a path, query or fragment:"
                " an origin is scheme://host[:port]"
            )
        origin = origin_of(entry)
        if origin not in origins:
            origins.append(origin)
    return tuple(origins)


def allowed_origins(idp_url: str | None, extra: Iterable[str]) -> frozenset[str]:
    """The origins realm URLs may use: BROKER_IDP_URL's and the listed ones."""
    allowed = set(extra)
    if idp_url:
        allowed.add(origin_of(idp_url))
    return frozenset(allowed)


def check_realm_url(realm: str, url: str, allowed: frozenset[str]) -> str:
    """`url` itself when its origin is allowed; IdPOriginNotAllowed otherwise (a URL that
    has no origin at all counts as not allowed)."""
    try:
        origin = origin_of(url)
    except ValueError:
        # No origin at all (or user info): refused even if the host part looks allowed.
        raise IdPOriginNotAllowed.naming(realm, _head(url)) from None
    if origin not in allowed:
        raise IdPOriginNotAllowed.naming(realm, origin)
    return url


def is_loopback(origin: str) -> bool:
    host = urlsplit(origin).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http_remote(origins: Iterable[str]) -> list[str]:
    """The origins that would carry client secrets unencrypted across a network: plain
    http:// to a host other than loopback (worth a warning at start)."""
    return sorted(o for o in origins if o.startswith("http://") and not is_loopback(o))


def _head(url: str) -> str:
    """What a log line or error may show of a URL: scheme and host part only (a path, a
    query or user info may carry anything)."""
    head = url.strip().split("?", 1)[0].split("#", 1)[0]
    scheme, sep, rest = head.partition("://")
    shown = f"{scheme}{sep}{rest.split('/', 1)[0].rpartition('@')[2]}" if sep else head[:40]
    return shown[:120]
