"""Log redaction, the last line of defence: what `redact` scrubs, what it leaves alone, and
the JSON log line that `JsonFormatter` writes."""

from __future__ import annotations

import base64
import json
import logging
import sys
from typing import Any

import jwt
import pytest

from broker.logs import JsonFormatter, redact

JWT = jwt.encode(
    {"sub": "svc", "exp": 1_800_000_000}, "a-signing-key-of-at-least-32-bytes!!", algorithm="HS256"
)
BASIC = base64.b64encode(b"atlas-acme:s3cret-acme-value").decode()
API_KEY = "Zm9vYmFyYmF6cXV4LWNhbGxlci1rZXk"
SECRET = "hunter2-but-longer"


def log_line(message: str, **extra: Any) -> str:
    record = logging.getLogger("broker.test").makeRecord(
        "broker.test", logging.WARNING, __file__, 1, message, (), None, extra=extra or None
    )
    return JsonFormatter().format(record)


# --- redact ------------------------------------------------------------------------------


def test_jwt_is_redacted() -> None:
    """A JWT anywhere in the text is replaced."""
    assert "token was [redacted-jwt] yesterday" == redact(f"token was {JWT} yesterday")


def test_basic_credentials_are_redacted() -> None:
    """The base64 pair after Basic is replaced, the scheme kept."""
    assert "Authorization: Basic [redacted]" == redact(f"Authorization: Basic {BASIC}")


def test_bearer_key_is_redacted() -> None:
    """The credential after Bearer is replaced, the scheme kept."""
    assert "Authorization: Bearer [redacted]" == redact(f"Authorization: Bearer {API_KEY}")


def test_bearer_jwt_is_redacted() -> None:
    """A JWT presented as a Bearer credential does not survive in any form."""
    assert JWT.split(".")[1] not in redact(f"Authorization: Bearer {JWT}")


@pytest.mark.parametrize(
    "text",
    [
        f"client_secret={SECRET}",
        f"grant_type=client_credentials&client_secret={SECRET}&scope=x",
        f"secret: {SECRET}",
        f"password={SECRET}",
        f"api_key={SECRET}",
        f"CLIENT_SECRET={SECRET}",
        f"client_secret='{SECRET}'",
        f'client_secret="{SECRET}"',
    ],
)
def test_secret_pairs_are_redacted(text: str) -> None:
    """The value of a secret=/secret: pair is replaced, whatever its quoting or case."""
    assert SECRET not in redact(text)


def test_secret_pair_keeps_its_name() -> None:
    """The name of the redacted pair stays, so the line still says what was there."""
    assert "client_secret=[redacted]&scope=x" == redact(f"client_secret={SECRET}&scope=x")


def test_json_access_token_is_redacted() -> None:
    """An IdP answer quoted in a message loses its access_token value."""
    text = '{"access_token": "opaque-token-value", "token_type": "Bearer", "expires_in": 3600}'

    assert '{"access_token": "[redacted]", "token_type": "Bearer", "expires_in": 3600}' == redact(
        text
    )


@pytest.mark.parametrize(
    "text",
    [
        "token_sha256=3b1f0c9a2d4e5f60",
        '"token_sha256": "3b1f0c9a2d4e5f60"',
        '"token_expires_at": "2026-11-27T20:00:00Z"',
        '"token_type": "Bearer"',
        "token.issued for realm acme by billing-api",
        "fetched 3 tokens in 120 ms",
        "realm acme: credentials loaded (version 4)",
        "the bearer of bad news",
        "GET /v1/realms/acme/token?min_ttl=60 200",
        "request_id=6f1c2a9e client_ip=10.0.0.7",
        "",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    """Text holding no credential, including token fingerprints and event names, is unchanged."""
    assert text == redact(text)


# --- JsonFormatter -----------------------------------------------------------------------


def test_json_line_is_valid_json_with_the_standard_fields() -> None:
    """A log line is one JSON object with time, level, logger and event."""
    entry = json.loads(log_line("token store unavailable", realm="acme"))

    assert ("warning", "broker.test", "token store unavailable", "acme") == (
        entry["level"],
        entry["logger"],
        entry["event"],
        entry["realm"],
    )


def test_json_line_redacts_a_jwt_in_an_extra() -> None:
    """A JWT passed in `extra` is redacted and the line stays valid JSON."""
    line = log_line("idp answered", detail=f"Authorization: Bearer {JWT}")

    assert (False, "Authorization: Bearer [redacted-jwt]") == (
        JWT in line,
        json.loads(line)["detail"],
    )


def test_json_line_redacts_a_jwt_in_the_message() -> None:
    """A JWT in the message itself is redacted and the line stays valid JSON."""
    line = log_line(f"unexpected token {JWT}")

    assert "unexpected token [redacted-jwt]" == json.loads(line)["event"]


def test_json_line_redacts_nested_extras() -> None:
    """Secrets inside a dict passed in `extra` are redacted too."""
    line = log_line("idp request", headers={"Authorization": f"Basic {BASIC}"})

    assert {"Authorization": "Basic [redacted]"} == json.loads(line)["headers"]


def test_json_line_redacts_an_exception_quoting_a_secret() -> None:
    """A traceback whose message quotes a credential is redacted."""
    try:
        raise RuntimeError(f"request failed: Authorization: Basic {BASIC}")
    except RuntimeError:
        record = logging.getLogger("broker.test").makeRecord(
            "broker.test", logging.ERROR, __file__, 1, "boom", (), sys.exc_info()
        )
    line = JsonFormatter().format(record)

    assert (False, True) == (BASIC in line, "exception" in json.loads(line))


def test_json_line_redacts_a_quoted_secret_in_the_message() -> None:
    """A double-quoted client_secret in a message does not reach the log line."""
    assert SECRET not in log_line(f'vault answered client_secret="{SECRET}"')


def test_json_line_redacts_an_access_token_in_a_quoted_body() -> None:
    """An IdP answer logged as a string loses its access_token value in the log line."""
    body = '{"access_token": "opaque-token-value-123", "token_type": "Bearer"}'

    assert "opaque-token-value-123" not in log_line("idp answered", body=body)


def test_json_line_stays_valid_for_non_string_values_of_secret_like_keys() -> None:
    """Every log line is valid JSON, whatever the types of the extras."""
    entry = json.loads(log_line("caller authenticated", has_api_key=True, token=None))

    assert "caller authenticated" == entry["event"]


def test_a_broker_api_key_is_redacted_wherever_it_sits() -> None:
    """A key in `broker keygen`'s format is scrubbed from a path, with no `key=` around it."""
    key = "atb_" + "Ab3-_" * 8 + "xyz"
    assert "GET /v1/realms/[redacted-api-key]/token" == redact(f"GET /v1/realms/{key}/token")
