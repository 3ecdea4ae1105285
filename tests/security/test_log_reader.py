"""Attacker position: whoever reads the broker's output (a log pipeline, a support
engineer, a log index with broad access). What the broker writes must hold no token, no
client secret and no caller key, even when a caller puts its key where it does not
belong."""

from __future__ import annotations

import httpx

from broker.cli.keygen import new_key
from polling import wait_for
from stack import Stack, bearer


def test_a_broker_key_in_the_url_and_headers_is_redacted_from_the_logs(stack: Stack) -> None:
    """A key in the broker's own format (`atb_…`) sent in the path, the query and the
    request id reaches no log line: the redaction knows the format."""
    broker = stack.start_broker()
    key = new_key()
    stack.leak_watch.add(key)
    response = httpx.get(
        f"{broker.url}/v1/realms/{key}/token",
        params={"hint": key},
        headers={"X-Request-ID": key},
        timeout=30,
    )
    assert 401 == response.status_code
    wait_for(
        lambda: "/v1/realms/" in broker.process.log_path.read_text(),
        timeout=10,
        message="the request was not logged",
    )
    broker.process.stop()
    output = broker.process.log_path.read_text()
    assert key not in output
    assert "[redacted-api-key]" in output


def test_a_key_shaped_request_id_is_not_taken(stack: Stack) -> None:
    """An X-Request-ID that is a broker key is replaced by a fresh id, so it reaches no
    audit record either."""
    broker = stack.start_broker()
    key = new_key()
    stack.leak_watch.add(key)
    response = httpx.get(f"{broker.url}/healthz", headers={"X-Request-ID": key}, timeout=30)
    assert key != response.headers["x-request-id"]


def test_a_key_sent_as_a_realm_name_stays_out_of_the_audit_trail(stack: Stack) -> None:
    """A caller that puts a broker key where the realm name goes is refused as usual, and
    the audit record (here its copy on stdout) names the realm by a marker, not the key."""
    broker = stack.start_broker()
    key = new_key()
    stack.leak_watch.add(key)
    response = httpx.get(
        f"{broker.url}/v1/realms/{key}/token", headers=bearer(stack.keys.everything), timeout=30
    )
    broker.process.stop()
    denied = [e for e in stack.audit_events(broker.process) if e["event"] == "token.denied"]
    assert 404 == response.status_code
    assert ["[redacted-api-key]"] == [e["realm"] for e in denied]
    assert key not in broker.process.log_path.read_text()
