"""Prometheus metrics: the series operators alert on, with names only, never secrets."""

from __future__ import annotations

import httpx

from stack import Stack


def test_metrics_cover_requests_idp_and_expiry_without_secrets(stack: Stack) -> None:
    """After issued, refused and failed requests, /metrics has each series, labelled by
    realm and reason only, and contains no token, key or client secret."""
    broker = stack.start_broker()
    realm, broken = stack.new_realm(), stack.new_realm("broken")
    stack.get_token(broker.url, realm.name)
    stack.get_token(broker.url, realm.name)
    stack.get_token(broker.url, realm.name, key=stack.keys.limited)
    stack.set_fault(broken.name, "status_500")
    try:
        stack.get_token(broker.url, broken.name)
    finally:
        stack.idp_control("DELETE", "/faults")

    response = httpx.get(f"{broker.url}/metrics")
    assert 200 == response.status_code
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    requests = "atlas_broker_token_requests_total"
    expected = [
        f'{requests}{{outcome="issued",realm="{realm.name}",source="idp"}} 1.0',
        f'{requests}{{outcome="issued",realm="{realm.name}",source="memory"}} 1.0',
        f'{requests}{{outcome="realm-not-allowed",realm="{realm.name}",source="none"}} 1.0',
        f'atlas_broker_idp_request_seconds_count{{realm="{realm.name}"}} 1.0',
        f'atlas_broker_idp_errors_total{{realm="{broken.name}",reason="idp-bad-response"}} 1.0',
        f'atlas_broker_token_fetches_total{{realm="{broken.name}",result="failure"}} 1.0',
        f'atlas_broker_token_expiry_seconds{{realm="{realm.name}"}}',
        'atlas_broker_dependency_up{dependency="vault"}',
        "atlas_broker_audit_spool_backlog_bytes 0.0",
    ]
    assert [] == [line for line in expected if line not in text]
    assert [] == stack.leak_watch.found_in(text)
