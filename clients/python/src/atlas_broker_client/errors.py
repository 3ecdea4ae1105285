"""What the client SDK raises. Every message is safe to log: none holds a token or a key.

    BrokerClientError
    ├── BrokerConfigError        bad arguments, no credential, an unreadable JWT file
    ├── BrokerUnreachable        no answer from the broker (connection refused, timeout)
    └── BrokerResponseError      the broker answered, but not with a token (`status`)
        ├── BrokerDenied         401, 403, 404: unknown credential, not allowed, no such realm
        ├── BrokerInvalidRequest 400, 422: a malformed realm, filter or min_ttl
        └── BrokerUpstreamError  502, 503: the IdP or Vault behind the broker is failing
                                 (`retry_after` when the broker sent one)

The `broker` command turns these into its exit codes (0 ok, 2 usage, 3 denied,
4 unreachable, 5 upstream failing, 1 anything else).
"""

from __future__ import annotations


class BrokerClientError(Exception):
    """Base of everything the SDK raises."""


class BrokerConfigError(BrokerClientError, ValueError):
    """The client cannot make a request as configured."""


class BrokerUnreachable(BrokerClientError):
    """The broker did not answer."""


class BrokerResponseError(BrokerClientError):
    """The broker answered something other than a token.

    `title` and `detail` come from the broker's problem document (which by contract holds
    no secret); `request_id` finds the request in the broker's logs.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        title: str | None = None,
        detail: str | None = None,
        request_id: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.detail = detail
        self.request_id = request_id
        self.retry_after = retry_after


class BrokerDenied(BrokerResponseError):
    """401, 403 or 404: unknown credential, not allowed (realm or role), or no such realm."""


class BrokerInvalidRequest(BrokerResponseError):
    """400 or 422: a malformed realm name or filter, or a min_ttl the realm cannot meet."""


class BrokerUpstreamError(BrokerResponseError):
    """502 or 503: the broker's IdP or secret store is failing; retry later."""
