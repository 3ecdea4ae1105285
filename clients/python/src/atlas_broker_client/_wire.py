"""The broker's HTTP API as the SDK speaks it.

Pure functions shared by `BrokerAuth` (sync and async) and `BrokerClient`: the requests'
parts, and an answer turned into its value or the most specific `BrokerClientError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from atlas_broker_client._version import __version__
from atlas_broker_client.errors import (
    BrokerConfigError,
    BrokerDenied,
    BrokerInvalidRequest,
    BrokerResponseError,
    BrokerUnreachable,
    BrokerUpstreamError,
)

_PROBLEM = "application/problem+json"
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
_USER_AGENT = f"atlas-broker-client/{__version__}"
# The broker's realm names (its 422 otherwise); checked here so a bad name never leaves.
_REALM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def is_valid_realm(realm: str) -> bool:
    return _REALM.fullmatch(realm) is not None


def check_realm(realm: str) -> str:
    if not isinstance(realm, str) or not is_valid_realm(realm):
        raise BrokerConfigError("realm must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    return realm


def check_broker_url(broker_url: str) -> str:
    """The broker's base URL without a trailing slash; credentials never go in a URL."""
    if not broker_url.startswith(("http://", "https://")):
        raise BrokerConfigError("broker_url must be an http:// or https:// URL")
    if httpx.URL(broker_url).userinfo:
        raise BrokerConfigError("broker_url must not carry credentials")
    return broker_url.rstrip("/")


@dataclass(frozen=True, slots=True)
class BrokerToken:
    """A realm token as the broker handed it over; the token is kept out of `repr`."""

    access_token: str = field(repr=False)
    expires_in: int
    realm: str
    token_type: str = "Bearer"
    expires_at: str | None = None  # RFC 3339 UTC, as the broker sent it

    def as_json(self) -> dict[str, Any]:
        """The broker's token response: what `broker token --json` prints."""
        body: dict[str, Any] = {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_in": self.expires_in,
        }
        if self.expires_at is not None:
            body["expires_at"] = self.expires_at
        body["realm"] = self.realm
        return body


def realm_url(broker_url: str, realm: str, *rest: str) -> str:
    """`{broker}/v1/realms/{realm}[/rest...]`, the realm quoted as one path segment."""
    return "/".join([f"{broker_url.rstrip('/')}/v1/realms/{quote(realm, safe='')}", *rest])


def token_url(broker_url: str, realm: str) -> str:
    return realm_url(broker_url, realm, "token")


def request_headers(credential: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {credential}",
        "Accept": "application/json",
        "User-Agent": _USER_AGENT,
    }


def unreachable(broker_url: str, exc: httpx.HTTPError) -> BrokerUnreachable:
    # The exception's own text is left out: only its type says what went wrong.
    return BrokerUnreachable(f"the broker at {broker_url} did not answer ({type(exc).__name__})")


def parse_token_response(response: httpx.Response, *, realm: str, secret: str) -> BrokerToken:
    """The token in a 200 answer, or the error the answer stands for.

    `secret` (the caller's credential) is scrubbed from any text quoted from the answer,
    in case something other than the broker answered and echoed it.
    """
    body = _json_object(response)
    if response.status_code != 200:
        raise error_from(response, body, secret)
    token = body.get("access_token") if body else None
    token_type = body.get("token_type", "Bearer") if body else None
    expires_in = body.get("expires_in") if body else None
    if (
        body is None
        or not isinstance(token, str)
        or not token
        or not isinstance(token_type, str)
        or token_type.lower() != "bearer"
        or not isinstance(expires_in, int)
        or isinstance(expires_in, bool)
        or expires_in < 0
    ):
        raise BrokerResponseError("the broker's answer is not a token response", status=200)
    expires_at = body.get("expires_at")
    return BrokerToken(
        access_token=token,
        expires_in=expires_in,
        realm=realm,
        token_type="Bearer",
        expires_at=expires_at if isinstance(expires_at, str) else None,
    )


def parse_json_response(response: httpx.Response, *, secret: str) -> dict[str, Any] | None:
    """The JSON object of a 2xx answer (None for 204), or the error the answer stands for."""
    body = _json_object(response)
    if not 200 <= response.status_code < 300:
        raise error_from(response, body, secret)
    if response.status_code == 204:
        return None
    if body is None:
        raise BrokerResponseError(
            "the broker's answer is not a JSON object", status=response.status_code
        )
    return body


def error_from(
    response: httpx.Response, body: dict[str, Any] | None, secret: str
) -> BrokerUnreachable | BrokerResponseError:
    """The most specific error for a broker answer that is not a success."""
    status = response.status_code
    is_problem = response.headers.get("content-type", "").startswith(_PROBLEM)
    if status in (502, 503, 504) and not is_problem:
        # A proxy or load balancer in front of the broker, not the broker itself.
        return BrokerUnreachable(f"a proxy answered HTTP {status} instead of the broker")
    title = _text(body, "title", secret)
    detail = _text(body, "detail", secret)
    request_id = _text(body, "request_id", secret) or _safe(
        response.headers.get("x-request-id"), secret
    )
    retry = response.headers.get("retry-after", "")
    message = f"the broker answered HTTP {status}"
    message += "".join(f": {part}" for part in (title, detail) if part)
    if request_id:
        message += f" (request id {request_id})"
    kind: type[BrokerResponseError] = BrokerResponseError
    if status in (401, 403, 404):
        kind = BrokerDenied
    elif status in (400, 422):
        kind = BrokerInvalidRequest
    elif status in (502, 503, 504):
        kind = BrokerUpstreamError
    return kind(
        message,
        status=status,
        title=title,
        detail=detail,
        request_id=request_id,
        retry_after=int(retry) if retry.isascii() and retry.isdigit() else None,
    )


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _text(body: dict[str, Any] | None, key: str, secret: str) -> str | None:
    value = body.get(key) if body else None
    return _safe(value, secret) if isinstance(value, str) else None


def _safe(value: str | None, secret: str) -> str | None:
    if not value:
        return None
    if secret and secret in value:
        value = value.replace(secret, "[redacted]")
    return _UNPRINTABLE.sub("?", value)[:300]
