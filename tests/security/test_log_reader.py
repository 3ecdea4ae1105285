"""Attacker position: whoever reads the broker's output (a log pipeline, a support
engineer, a log index with broad access). What the broker writes must hold no token, no
client secret and no caller key, even when a caller puts its key where it does not
belong."""

from __future__ import annotations

import httpx

from broker.keygen import new_key
from stack import Stack, wait_for


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
