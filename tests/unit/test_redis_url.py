"""Sentinel and Cluster URLs, plain and TLS, parsed into connection options."""

from __future__ import annotations

import pytest

from broker.adapters.redis_connect import parse_redis_url, tls_kwargs


def test_rediss_sentinel_url_asks_for_tls_with_its_options() -> None:
    """`rediss+sentinel://` with query options gives `ssl=True` and those `ssl_*` options."""
    endpoint = parse_redis_url(
        "rediss+sentinel://:pw@s1:26380,s2/atlas/2"
        "?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required&ssl_check_hostname=false"
    )

    assert ("sentinel", "atlas", 2) == (endpoint.kind, endpoint.service_name, endpoint.db)
    assert {
        "ssl": True,
        "ssl_ca_certs": "/etc/ca.pem",
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": False,
    } == tls_kwargs(endpoint)


def test_rediss_cluster_url_without_options_verifies_against_system_cas() -> None:
    """`rediss+cluster://` alone is TLS with redis-py's verifying defaults."""
    endpoint = parse_redis_url("rediss+cluster://n1:7000,n2:7001")

    assert (("n1", 7000), ("n2", 7001)) == endpoint.nodes
    assert {"ssl": True} == tls_kwargs(endpoint)


def test_plain_urls_ask_for_no_tls() -> None:
    """`redis+cluster://` connects without TLS options."""
    assert {} == tls_kwargs(parse_redis_url("redis+cluster://n1:7000"))


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://n1?ssl_ca_certs=/ca.pem",
        "rediss+cluster://n1?ssl_cert_reqs=maybe",
        "rediss+cluster://n1?password=x",
        "rediss+sentinel://s1/atlas?ssl_ca_certs=",
    ],
)
def test_bad_tls_query_is_refused(url: str) -> None:
    """Options on a plain URL, unknown options and bad values are ValueErrors."""
    with pytest.raises(ValueError, match=r"^(sentinel|cluster) URL: "):
        parse_redis_url(url)
