"""The allowed-origins rule for realm URLs (pure)."""

from __future__ import annotations

import pytest

from broker.core.errors import IdPOriginNotAllowed
from broker.core.origins import (
    allowed_origins,
    check_realm_url,
    origin_of,
    parse_origins,
    plain_http_remote,
)

ALLOWED = allowed_origins("https://login.example.com/base", ["http://127.0.0.1:8080"])


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://Login.Example.com:443/auth/realms/a", "https://login.example.com"),
        ("http://127.0.0.1:8080/x?y=1", "http://127.0.0.1:8080"),
        ("https://[::1]:8443/", "https://[::1]:8443"),
    ],
)
def test_origin_is_scheme_host_and_non_default_port(url: str, origin: str) -> None:
    """Case is folded and a default port dropped; path and query are not part of it."""
    assert origin == origin_of(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://login.example.com/auth/realms/acme/protocol/openid-connect/token",
        "https://LOGIN.example.com:443/other",
        "http://127.0.0.1:8080/auth/realms/acme",
    ],
)
def test_url_at_an_allowed_origin_passes(url: str) -> None:
    """BROKER_IDP_URL's origin and the listed ones are allowed, whatever the path."""
    assert url == check_realm_url("acme", url, ALLOWED)


@pytest.mark.parametrize(
    "url",
    [
        "https://login.example.com.evil.test/token",
        "http://login.example.com/token",  # same host, other scheme
        "https://login.example.com:8443/token",  # same host, other port
        "https://user@login.example.com/token",
        "ftp://login.example.com/token",
        "not a url",
    ],
)
def test_url_elsewhere_is_refused(url: str) -> None:
    """Another host, scheme or port, user info or no http(s) URL at all is refused."""
    with pytest.raises(IdPOriginNotAllowed) as refused:
        check_realm_url("acme", url, ALLOWED)

    assert "/token" not in refused.value.detail
    assert "'acme'" in refused.value.detail


def test_origin_list_is_normalised_and_deduplicated() -> None:
    """A comma list with spaces, case and default ports becomes distinct origins."""
    assert ("https://a.test", "http://b.test:81") == parse_origins(
        " https://A.test:443, http://b.test:81 ,https://a.test,"
    )


def test_plain_http_beyond_loopback_is_flagged() -> None:
    """http:// to a remote host is flagged; https:// and loopback are not."""
    origins = ["http://idp.example.com", "http://localhost:8080", "http://127.0.0.1", "https://x"]

    assert ["http://idp.example.com"] == plain_http_remote(origins)
