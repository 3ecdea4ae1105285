"""Prometheus metrics: the series operators alert on, with names only, never secrets."""

from __future__ import annotations

import signal

import httpx
import pytest

from atlas_broker_dev.processes import free_port
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
        'atlas_broker_caller_token_requests_total{caller="svc-all",outcome="issued"} 2.0',
        "atlas_broker_audit_spool_backlog_bytes 0.0",
    ]
    assert [] == [line for line in expected if line not in text]
    assert [] == stack.leak_watch.found_in(text)


def sample(text: str, series: str) -> float | None:
    """The value of one exact series in Prometheus text, or None when it is absent."""
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    return None


def test_http_requests_are_timed_by_route_template_and_status_class(stack: Stack) -> None:
    """Token requests are counted under the route template, not the realm-bearing path,
    next to the build info and the process metrics."""
    broker = stack.start_broker()
    realm = stack.new_realm()
    stack.get_token(broker.url, realm.name)
    stack.get_token(broker.url, realm.name, key="wrong-key")
    text = httpx.get(f"{broker.url}/metrics").text
    histogram = "atlas_broker_http_request_duration_seconds_count"
    route = "/v1/realms/{realm}/token"
    assert 1.0 == sample(text, f'{histogram}{{route="{route}",status="2xx"}}')
    assert 1.0 == sample(text, f'{histogram}{{route="{route}",status="4xx"}}')
    assert "atlas_broker_build_info{" in text
    assert "process_resident_memory_bytes " in text


def test_totals_cover_every_worker(stack: Stack) -> None:
    """With two workers sharing the metrics port, every scrape reports the requests both
    workers answered."""
    port = free_port()
    broker = stack.start_broker(BROKER_WORKERS="2", BROKER_METRICS_PORT=str(port))
    for _ in range(20):  # a new connection each time, so the kernel spreads them
        assert 200 == httpx.get(f"{broker.url}/healthz").status_code
    series = 'atlas_broker_http_request_duration_seconds_count{route="/healthz",status="2xx"}'
    scrapes = [httpx.get(f"http://127.0.0.1:{port}/metrics").text for _ in range(6)]
    counts = {sample(text, series) for text in scrapes}
    # The start-up probe adds its own /healthz requests, one per attempt until it answered.
    assert 1 == len(counts)
    assert (counts.pop() or 0) >= 20


def test_metrics_port_serves_metrics_and_the_main_port_no_longer_does(stack: Stack) -> None:
    """With BROKER_METRICS_PORT, /metrics answers there and is a 404 on the main port."""
    port = free_port()
    broker = stack.start_broker(BROKER_METRICS_PORT=str(port))
    assert 404 == httpx.get(f"{broker.url}/metrics").status_code
    response = httpx.get(f"http://127.0.0.1:{port}/metrics")
    assert 200 == response.status_code
    assert "atlas_broker_build_info{" in response.text
    assert 404 == httpx.get(f"http://127.0.0.1:{port}/healthz").status_code


def test_a_broker_with_a_metrics_port_stops_cleanly_on_sigterm(stack: Stack) -> None:
    """SIGTERM stops the metrics listener with the broker: shutdown completes without an
    error and the port is released."""
    port = free_port()
    broker = stack.start_broker(BROKER_METRICS_PORT=str(port))
    process = broker.process.proc
    assert process is not None
    broker.process.signal(signal.SIGTERM)

    assert -signal.SIGTERM == process.wait(timeout=30)  # uvicorn re-raises it once done
    log = broker.process.log_path.read_text()
    assert "Application shutdown complete." in log
    assert [] == [line for line in log.splitlines() if '"level":"error"' in line]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics")
