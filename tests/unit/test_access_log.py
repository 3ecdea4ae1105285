"""`AccessLog`: with the broker's own logging set up, its lines are written directly, in
the shape and with the redaction of every other log line; with any other logging set
up, they go through `logging`."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from broker import logs
from broker.logs import AccessLog, JsonFormatter, bind_log_context, clear_log_context

FIELDS = {"client_ip": "10.1.2.3", "duration_ms": 1.5, "status": 200}


@pytest.fixture
def configured() -> Iterator[io.StringIO]:
    """The broker's logging, writing to a buffer; the test process's own restored after."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logs._handler)
    logs.configure_logging("info")
    stream = io.StringIO()
    assert logs._handler is not None
    logs._handler.setStream(stream)
    bind_log_context(request_id="req-1", caller="billing", realm="acme")
    yield stream
    clear_log_context()
    root.handlers[:], logs._handler = saved[0], saved[2]
    root.setLevel(saved[1])


def sole_handler() -> None:
    """Only the broker's handler on the root logger (pytest adds its own for each test)."""
    assert logs._handler is not None
    logging.getLogger().handlers[:] = [logs._handler]


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_direct_line_has_the_shape_of_a_formatted_one(configured: io.StringIO) -> None:
    sole_handler()
    AccessLog().write("GET /v1/realms/acme/token 200", FIELDS)
    record = logging.getLogger("broker.access").makeRecord(
        "broker.access",
        logging.INFO,
        __file__,
        1,
        "GET /v1/realms/acme/token 200",
        (),
        None,
        extra=FIELDS,
    )
    (direct,) = lines(configured)
    formatted = json.loads(JsonFormatter().format(record))
    assert direct.pop("time")[:10] == formatted.pop("time")[:10]
    assert formatted == direct
    assert {"request_id": "req-1", "caller": "billing", "realm": "acme"}.items() <= direct.items()


def test_a_direct_line_is_redacted(configured: io.StringIO) -> None:
    key = "atb_" + "k" * 43
    sole_handler()
    AccessLog().write(f"GET /v1/realms/{key}/token 401", {"client_ip": None, "status": 401})
    assert key not in configured.getvalue()
    assert "[redacted-api-key]" in lines(configured)[0]["event"]


def test_nothing_is_written_below_the_log_level(configured: io.StringIO) -> None:
    sole_handler()
    logging.getLogger().setLevel(logging.WARNING)
    AccessLog().write("GET /healthz 200", FIELDS)
    assert "" == configured.getvalue()


def test_other_logging_gets_records(
    configured: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler added beside the broker's (here pytest's) sees the line as a record."""
    with caplog.at_level(logging.INFO, logger="broker.access"):
        AccessLog().write("GET /healthz 200", FIELDS)
    assert ["GET /healthz 200"] == [r.getMessage() for r in caplog.records]
    assert 200 == caplog.records[0].status
