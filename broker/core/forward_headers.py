"""Which headers the forward proxy passes on: the caller's to the Atlas API and the API's
back to the caller (RFC 9110 §7.6.1 hop-by-hop fields never; the caller's credentials and
cookie never reach the API; the broker sets its own Date, Server and request id)."""

from __future__ import annotations

# RFC 9110 §7.6.1 connection-specific fields, plus what the broker sets itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_NOT_FORWARDED = HOP_BY_HOP | {
    "host",
    "authorization",  # the caller's broker credential: never the API's business
    "cookie",
    "content-length",  # set again from the body actually sent
    "expect",
    "x-request-id",  # replaced by the request's (validated) id
}
# The broker's server sets its own Date and Server, its middleware the request id.
_NOT_RETURNED = HOP_BY_HOP | {"x-request-id", "date", "server"}


def forwarded_headers(
    headers: list[tuple[str, str]], request_id: str | None
) -> list[tuple[str, str]]:
    """The caller's headers the API may see: no hop-by-hop ones (nor those the caller's
    `Connection` names), no caller credentials; the request id added."""
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
    }
    kept = [
        (n, v) for n, v in headers if n.lower() not in _NOT_FORWARDED and n.lower() not in named
    ]
    if request_id:
        kept.append(("x-request-id", request_id))
    return kept


def returned_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The API's headers the caller gets: all but hop-by-hop ones (Set-Cookie included)."""
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
    }
    return [(n, v) for n, v in headers if n.lower() not in _NOT_RETURNED and n.lower() not in named]
