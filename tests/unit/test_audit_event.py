"""The audit event's wire shape, the same in every sink ."""

from __future__ import annotations

import json

from broker.core.audit import AuditEvent

# 2027-01-15T08:00:00Z
EPOCH = 1_800_000_000


def test_time_is_iso_utc_with_millis_and_z() -> None:
    """`time` is ISO 8601 in UTC with milliseconds and a Z suffix."""
    event = AuditEvent(event="token.issued", time=EPOCH + 0.123, outcome="success")

    assert "2027-01-15T08:00:00.123Z" == event.as_json()["time"]


def test_time_on_a_whole_second_keeps_its_millis() -> None:
    """A time on a whole second still shows three digits of milliseconds."""
    event = AuditEvent(event="token.issued", time=EPOCH, outcome="success")

    assert "2027-01-15T08:00:00.000Z" == event.as_json()["time"]


def test_token_expiry_is_iso_utc_with_z() -> None:
    """`token_expires_at` is ISO 8601 in UTC with a Z suffix, to the second."""
    event = AuditEvent(
        event="token.issued", time=EPOCH, outcome="success", token_expires_at=EPOCH + 3600
    )

    assert "2027-01-15T09:00:00Z" == event.as_json()["token_expires_at"]


def test_empty_fields_are_omitted() -> None:
    """Fields that are None do not appear in the JSON at all."""
    event = AuditEvent(event="token.denied", time=EPOCH, outcome="denied", realm="acme", id="e1")

    assert {
        "id": "e1",
        "event": "token.denied",
        "time": "2027-01-15T08:00:00.000Z",
        "outcome": "denied",
        "realm": "acme",
    } == event.as_json()


def test_full_event_has_the_documented_shape() -> None:
    """An issued-token event carries exactly the documented fields."""
    event = AuditEvent(
        event="token.issued",
        time=EPOCH + 0.5,
        outcome="success",
        realm="acme",
        caller="billing-api",
        source="cache",
        token_sha256="3b1f0c9a2d4e5f60",
        token_expires_at=EPOCH + 3600,
        request_id="req-1",
        client_ip="10.0.0.7",
        id="e1",
    )

    assert {
        "id": "e1",
        "time": "2027-01-15T08:00:00.500Z",
        "event": "token.issued",
        "caller": "billing-api",
        "realm": "acme",
        "outcome": "success",
        "source": "cache",
        "token_sha256": "3b1f0c9a2d4e5f60",
        "token_expires_at": "2027-01-15T09:00:00Z",
        "request_id": "req-1",
        "client_ip": "10.0.0.7",
    } == event.as_json()


def test_every_event_gets_its_own_id() -> None:
    """Two events created alike still have different ids."""
    first = AuditEvent(event="token.issued", time=EPOCH, outcome="success")
    second = AuditEvent(event="token.issued", time=EPOCH, outcome="success")

    assert first.id != second.id


def test_as_json_is_json_serialisable() -> None:
    """The wire shape serialises with the standard library as is."""
    event = AuditEvent(event="token.fetched", time=EPOCH, outcome="success", credential_version=4)

    assert 4 == json.loads(json.dumps(event.as_json()))["credential_version"]


def test_a_key_shaped_realm_name_is_not_recorded() -> None:
    """A realm name that is a broker API key (`atb_…`) is written as a marker."""
    event = AuditEvent(event="token.denied", time=EPOCH, outcome="denied", realm="atb_" + "k" * 43)
    assert "[redacted-api-key]" == event.as_json()["realm"]
