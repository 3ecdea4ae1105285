"""The audited source address: the peer, or behind trusted proxies the first untrusted
X-Forwarded-For hop read from the right."""

from __future__ import annotations

import ipaddress

from broker.http.middleware import source_address

PROXIES = (ipaddress.ip_network("10.0.0.0/24"),)


def test_an_untrusted_peers_forwarded_header_is_ignored() -> None:
    """A client that is not a trusted proxy cannot choose its audited address."""
    assert "192.0.2.7" == source_address("192.0.2.7", [b"203.0.113.9"], PROXIES)


def test_behind_a_trusted_proxy_the_forwarded_client_is_the_source() -> None:
    """Through one trusted proxy, the hop it appended is the source."""
    assert "203.0.113.9" == source_address("10.0.0.2", [b"203.0.113.9"], PROXIES)


def test_hops_the_client_made_up_are_skipped() -> None:
    """Entries left of the first untrusted hop are the client's own and are not believed."""
    forwarded = [b"198.51.100.1, 203.0.113.9, 10.0.0.3"]
    assert "203.0.113.9" == source_address("10.0.0.2", forwarded, PROXIES)


def test_a_malformed_hop_ends_the_trust() -> None:
    """A hop that is not an address stops the walk at the last trusted one."""
    assert "10.0.0.3" == source_address("10.0.0.2", [b"not-an-ip, 10.0.0.3"], PROXIES)
