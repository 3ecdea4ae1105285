"""`Gatekeeper`: who is calling, may they call this fast, may they have this role.

A caller presents one credential: a client certificate verified by the TLS listener
(`admit_certificate`), or `Authorization: Bearer <api key or workload JWT>`, told apart
by shape: three dot-separated base64url segments are a JWT (RFC 7515 compact
serialization), anything else is an API key. A key is looked up by its SHA-256
(`Policy.caller_for_key`), a JWT is verified against the policy's `jwt_issuers` and its
(issuer, subject) looked up (`Policy.caller_for_workload`). The rate limit is taken right
after, so a runaway caller is stopped before anything touches a realm.

Every refusal is audited. A credential that proves nobody (401, or 503 when a workload
issuer's keys cannot be had) is counted (`RefusalTally`), and written as one `auth.failed`
event per source address per minute: unauthenticated clients cannot fill the trail. So
are a caller's requests past its rate limit, but for the first of each minute:
`rate_limit.exceeded`, per caller. Other refusals of a known caller are one event each:
`token.denied` when the request named a realm's token, `access.denied` for the other
endpoints (the audit trail, the realm list, admin operations). A record holds the reason
and, once known, the caller's name; never the credential.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable

from broker.core.audit import AuditEvent
from broker.core.context import RequestContext
from broker.core.errors import (
    BrokerError,
    Forbidden,
    JwksUnavailable,
    RateLimited,
    Unauthenticated,
)
from broker.core.policy import Caller, CertificateIdentity, Policy, Role
from broker.core.ports import AuditSink, Clock, RateLimiter, WorkloadVerifier
from broker.core.refusal_tally import RefusalTally

_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


def looks_like_jwt(credential: str) -> bool:
    """Three base64url segments (the signature may be empty, as `alg: none` has it)."""
    return _JWT_SHAPE.fullmatch(credential) is not None


class Gatekeeper:
    def __init__(
        self,
        *,
        policy: Callable[[], Policy],
        verifier: WorkloadVerifier,
        limiter: RateLimiter,
        audit: AuditSink,
        clock: Clock,
    ) -> None:
        self._policy = policy
        self._verifier = verifier
        self._limiter = limiter
        self._audit = audit
        self._clock = clock
        self.failures = RefusalTally(audit=audit, clock=clock)
        self.throttled = RefusalTally(
            audit=audit,
            clock=clock,
            event="rate_limit.exceeded",
            keyed_by="caller",
            first_alone=True,
        )

    async def run_refusal_audit(self) -> None:
        """Write each minute's counted refusals when it ends, until cancelled."""
        await asyncio.gather(self.failures.run(), self.throttled.run())

    async def flush_refusals(self) -> None:
        """Write every counted refusal now (at shutdown)."""
        await self.failures.flush_all()
        await self.throttled.flush_all()

    async def admit(
        self,
        credential: str,
        *,
        ctx: RequestContext,
        realm: str | None = None,
        token_request: bool = False,
    ) -> Caller:
        """The caller the credential proves, if it is within its rate limit.

        `realm` and `token_request` only describe the request in the audit record of a
        refusal."""
        try:
            caller = await self._identify(credential)
        except (Unauthenticated, JwksUnavailable) as exc:
            kind = "workload-jwt" if looks_like_jwt(credential) else "api-key"
            reason = exc.slug if isinstance(exc, JwksUnavailable) else f"{kind}-refused"
            await self.refused(exc, ctx=ctx, realm=realm, reason=reason)
            raise
        await self.throttle(caller, ctx=ctx, realm=realm, token_request=token_request)
        return caller

    async def admit_certificate(
        self,
        identity: CertificateIdentity,
        *,
        ctx: RequestContext,
        realm: str | None = None,
        token_request: bool = False,
    ) -> Caller:
        """The caller a verified client certificate names (by `spiffe_id`, else by
        `cert_subject`), if it is within its rate limit."""
        caller = self._policy().caller_for_certificate(identity)
        if caller is None:
            refusal = Unauthenticated("the client certificate names no caller")
            await self.refused(refusal, ctx=ctx, reason="client-certificate-refused")
            raise refusal
        await self.throttle(caller, ctx=ctx, realm=realm, token_request=token_request)
        return caller

    async def throttle(
        self,
        caller: Caller,
        *,
        ctx: RequestContext,
        realm: str | None = None,
        token_request: bool = False,
    ) -> None:
        """Count one request against the caller's rate limit; 429 (audited) beyond it."""
        if caller.rate_limit is None:
            return
        wait = await self._limiter.acquire(caller.name, caller.rate_limit)
        if wait <= 0:
            return
        limited = RateLimited(
            f"caller {caller.name!r} exceeded {caller.rate_limit.per_second:g} "
            f"requests per second (burst {caller.rate_limit.burst})",
            retry_after=max(1, math.ceil(wait)),
        )
        # The first 429 of a caller's minute is recorded on its own; the rest are counted
        # (a caller past its limit could otherwise write to the trail as fast as it sends).
        if self.throttled.record(caller.name, limited.slug):
            await self.refused(
                limited, ctx=ctx, realm=realm, token_request=token_request, caller=caller.name
            )
        raise limited

    async def require_role(self, caller: Caller, role: Role, *, ctx: RequestContext) -> None:
        """Refuse (403, audited) a caller without `role`; admin implies auditor."""
        if caller.has_role(role):
            return
        refusal = Forbidden(f"caller {caller.name!r} needs the {role} role")
        await self.refused(refusal, ctx=ctx, caller=caller.name, reason="role-required")
        raise refusal

    async def refused(
        self,
        error: BrokerError,
        *,
        ctx: RequestContext,
        realm: str | None = None,
        token_request: bool = False,
        caller: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Audit a refusal: the reason is the error's slug unless given. A failed
        authentication is counted towards its source's `auth.failed` event instead."""
        if isinstance(error, Unauthenticated | JwksUnavailable):
            self.failures.record(ctx.client_ip, reason or error.slug)
            return
        await self._audit.emit(
            AuditEvent(
                event="token.denied" if token_request else "access.denied",
                time=self._clock.now(),
                outcome="denied",
                caller=caller,
                realm=realm,
                reason=reason or error.slug,
                request_id=ctx.request_id,
                client_ip=ctx.client_ip,
            )
        )

    async def _identify(self, credential: str) -> Caller:
        policy = self._policy()
        if looks_like_jwt(credential):
            if not policy.spec.jwt_issuers:
                raise Unauthenticated("workload JWTs are not accepted: no jwt_issuers configured")
            identity = await self._verifier.identify(credential, policy.spec.jwt_issuers)
            caller = policy.caller_for_workload(identity)
            if caller is None:
                raise Unauthenticated("the workload's subject is not a caller of its issuer")
            return caller
        caller = policy.caller_for_key(credential)
        if caller is None:
            raise Unauthenticated("unknown caller credential")
        return caller
