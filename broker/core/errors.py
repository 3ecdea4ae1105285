"""The broker's error tree. Every class knows its HTTP status; one handler renders them.

    BrokerError
    ├── CallerError                     the request cannot be served as asked (4xx)
    │   ├── Unauthenticated             401  no or unknown credential
    │   ├── Forbidden                   403  caller may not use this realm / endpoint / scope
    │   │   └── ScopeNotAllowed         403  caller may not ask for this scope set
    │   ├── InvalidScope                400  the IdP refused the scope set asked for
    │   ├── RealmNotFound               404  no credentials for the realm in the secret source
    │   ├── InvalidRequest              422  malformed realm, min_ttl, ...
    │   │   └── MinTtlUnsatisfiable     422  even a fresh token lives shorter than min_ttl
    │   ├── ForwardPathRefused          400  a forward path that could leave the API's base URL
    │   ├── BodyTooLarge                413  a forwarded body beyond BROKER_FORWARD_MAX_BODY
    │   ├── RequestTooLarge             431  headers beyond the limit
    │   └── RateLimited                 429  the caller exceeded its rate
    └── UpstreamError                   a dependency failed (5xx)
        ├── IdPRejected                 502  the IdP refused the credentials (invalid_client ...)
        ├── IdPBadResponse              502  the IdP answered something that is not a token
        ├── IdPOriginNotAllowed         502  a realm URL points outside the allowed IdP origins
        ├── IdPUnavailable              503  the IdP cannot be reached or timed out
        ├── CredentialsInvalid          502  the realm's secret lacks client_id / client_secret
        ├── SecretSourceUnavailable     503  Vault cannot be reached
        ├── StoreUnavailable            503  Redis failed (the core falls back; rarely surfaces)
        ├── RealmUnsettled              503  the realm was evicted or rotated during every fetch
        ├── JwksUnavailable             503  a workload issuer's keys cannot be fetched
        ├── ApiNotConfigured            503  forwarding asked for, but no API base URL is set
        ├── ApiUnreachable              502  the Atlas API cannot be reached (forward proxy)
        ├── ApiTimeout                  504  the Atlas API did not answer in time
        └── AuditUnavailable            503  BROKER_AUDIT_REQUIRED and no durable audit record

`detail` is shown to callers: it never contains a token, a secret or a caller's key.
"""

from __future__ import annotations

from typing import ClassVar


class BrokerError(Exception):
    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"
    default_retry_after: ClassVar[int | None] = None

    def __init__(self, detail: str, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after if retry_after is not None else self.default_retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


class CallerError(BrokerError):
    status = 400
    slug = "bad-request"
    title = "Bad request"


class Unauthenticated(CallerError):
    status = 401
    slug = "unauthenticated"
    title = "Missing or invalid caller credential"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="atlas-broker"'}


class Forbidden(CallerError):
    status = 403
    slug = "forbidden"
    title = "Caller is not allowed this"


class ScopeNotAllowed(Forbidden):
    slug = "scope-not-allowed"
    title = "Caller may not ask for this scope"


class InvalidScope(CallerError):
    """The IdP answered `invalid_scope` to the scope set a caller asked for."""

    status = 400
    slug = "invalid-scope"
    title = "The identity provider refused the scope asked for"


class RealmNotFound(CallerError):
    status = 404
    slug = "realm-not-found"
    title = "Realm not found"


class InvalidRequest(CallerError):
    status = 422
    slug = "invalid-request"
    title = "Invalid request"


class MinTtlUnsatisfiable(InvalidRequest):
    slug = "min-ttl-unsatisfiable"
    title = "min_ttl exceeds the realm's token lifetime"


class RequestTooLarge(CallerError):
    status = 431
    slug = "request-header-fields-too-large"
    title = "Request header fields too large"


class ForwardPathRefused(CallerError):
    """A forward path that could reach anything but the API's base URL (encoded slashes,
    dot segments, backslashes, user info, a second host): nothing is sent."""

    status = 400
    slug = "forward-path-refused"
    title = "The path would leave the API's base URL"


class BodyTooLarge(CallerError):
    status = 413
    slug = "content-too-large"  # as the listener's own limit (RFC 9110 §15.5.14)
    title = "The request body is larger than the broker forwards"


class RateLimited(CallerError):
    status = 429
    default_retry_after = 1
    slug = "rate-limited"
    title = "Rate limit exceeded"


class UpstreamError(BrokerError):
    status = 502
    slug = "upstream-error"
    title = "Upstream error"


class IdPRejected(UpstreamError):
    """The IdP answered with an OAuth2 error; `reason` is its `error` code."""

    slug = "idp-rejected"
    title = "The identity provider refused the realm's credentials"

    def __init__(self, detail: str, *, reason: str) -> None:
        super().__init__(detail)
        self.reason = reason


class IdPBadResponse(UpstreamError):
    slug = "idp-bad-response"
    title = "The identity provider answered with something that is not a valid token"


class IdPOriginNotAllowed(UpstreamError):
    """A realm's URL (from the secret store) has an origin the operator did not allow:
    nothing is sent there. The detail names the realm and the origin, never a path."""

    slug = "idp-origin-not-allowed"
    title = "The realm's identity provider URL is not at an allowed origin"

    @classmethod
    def naming(cls, realm: str, origin: str) -> IdPOriginNotAllowed:
        return cls(
            f"realm {realm!r} names the IdP origin {origin!r}, which is neither "
            "BROKER_IDP_URL's nor in BROKER_IDP_ALLOWED_ORIGINS"
        )


class IdPUnavailable(UpstreamError):
    status = 503
    default_retry_after = 5
    slug = "idp-unavailable"
    title = "The identity provider is unreachable"


class CredentialsInvalid(UpstreamError):
    slug = "realm-credentials-invalid"
    title = "The realm's credentials in the secret store are incomplete"


class SecretSourceUnavailable(UpstreamError):
    status = 503
    default_retry_after = 5
    slug = "secret-source-unavailable"
    title = "The secret store is unreachable"


class StoreUnavailable(UpstreamError):
    status = 503
    default_retry_after = 5
    slug = "token-store-unavailable"
    title = "The token store is unreachable"


class RealmUnsettled(UpstreamError):
    status = 503
    title = "The realm was evicted or rotated during every fetch"
    slug = "realm-unsettled"
    default_retry_after = 1


class JwksUnavailable(UpstreamError):
    status = 503
    default_retry_after = 5
    slug = "jwks-unavailable"
    title = "The workload identity issuer's keys cannot be fetched"


class AuditUnavailable(UpstreamError):
    """The audit trail could not record the event durably (neither Redis nor the spool),
    and BROKER_AUDIT_REQUIRED forbids serving without it."""

    status = 503
    default_retry_after = 5
    slug = "audit-unavailable"
    title = "The audit trail cannot record the request"


class ApiNotConfigured(UpstreamError):
    status = 503
    slug = "api-not-configured"
    title = "No Atlas API base URL is configured for the realm"


class ApiUnreachable(UpstreamError):
    slug = "api-unreachable"
    title = "The Atlas API cannot be reached"


class ApiTimeout(UpstreamError):
    status = 504
    slug = "api-timeout"
    title = "The Atlas API did not answer in time"
