"""What the client SDK raises. Every message is safe to log: none holds a token or a key.

    BrokerClientError
    ├── BrokerConfigError        bad arguments, no credential, an unreadable JWT file
    ├── BrokerUnreachable        no answer from the broker (connection refused, timeout)
    └── BrokerResponseError      the broker answered, but not with a token (`status`)
        ├── BrokerDenied         401, 403, 404: the caller may not have this realm's token
        ├── BrokerInvalidRequest 422: a malformed realm or a min_ttl the realm cannot meet
        └── BrokerUpstreamError  502, 503: the IdP or Vault behind the broker is failing
                                 (`retry_after` when the broker sent one)

`broker token` turns these into its exit codes (`broker.client.cli`).
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
    """401, 403 or 404: unknown credential, realm not allowed, or no such realm."""


class BrokerInvalidRequest(BrokerResponseError):
    """422: a malformed realm name or a min_ttl the realm's tokens cannot meet."""


class BrokerUpstreamError(BrokerResponseError):
    """502 or 503: the broker's IdP or secret store is failing; retry later."""
