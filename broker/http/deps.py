"""FastAPI dependencies: the caller, the broker and the request context as `Annotated` aliases."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Annotated

from cryptography import x509
from fastapi import Depends, Request
from starlette.types import Scope

from broker.core import rules
from broker.core.broker import TokenBroker
from broker.core.context import RequestContext
from broker.core.errors import Unauthenticated
from broker.core.identity import Gatekeeper
from broker.core.policy import Caller, CertificateIdentity, Role
from broker.http.state import AppState
from broker.logs import bind_log_context


def app_state_of(request: Request) -> AppState:
    state: AppState = request.state.app
    return state


async def app_state(request: Request) -> AppState:
    return app_state_of(request)


def bearer_credential(header: str | None) -> str:
    """The credential of an `Authorization: Bearer <credential>` header value."""
    if not header:
        raise Unauthenticated("send 'Authorization: Bearer <api key or workload JWT>'")
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise Unauthenticated("the Authorization header must use the Bearer scheme")
    return credential


async def authenticate(request: Request, state: Annotated[AppState, Depends(app_state)]) -> Caller:
    """The caller of a FastAPI route (`admit_caller`)."""
    realm = request.path_params.get("realm")
    return await admit_caller(
        state.gate,
        authorization=request.headers.get("authorization"),
        scope=request.scope,
        ctx=request_context(request),
        realm=realm if isinstance(realm, str) else None,
        token_request=is_token_request(request.scope["path"], request.method),
    )


def is_token_request(path: str, method: str) -> bool:
    """A request for a token, whether the v1 API or the drop-in OAuth2 endpoint (DELETE
    evicts): how the audit record of a refusal names it."""
    return path.endswith("/token") and method != "DELETE"


async def admit_caller(
    gate: Gatekeeper,
    *,
    authorization: str | None,
    scope: Scope,
    ctx: RequestContext,
    realm: str | None,
    token_request: bool,
) -> Caller:
    """The caller a request's credential proves (a verified client certificate when it
    sends no `Authorization`, else its Bearer API key or workload JWT), within its rate
    limit. Refusals are audited (`broker.core.identity`). `realm` and `token_request`
    describe the request in the audit record of a refusal; an invalid realm name is left
    out of it."""
    realm = realm if realm is not None and rules.is_valid_realm(realm) else None
    if authorization is None:
        identity = client_certificate(scope)
        if identity is not None:
            caller = await gate.admit_certificate(
                identity, ctx=ctx, realm=realm, token_request=token_request
            )
            bind_log_context(caller=caller.name, **({"realm": realm} if realm else {}))
            return caller
    try:
        credential = bearer_credential(authorization)
    except Unauthenticated as exc:
        await gate.refused(exc, ctx=ctx, realm=realm, reason="no-bearer-credential")
        raise
    caller = await gate.admit(credential, ctx=ctx, realm=realm, token_request=token_request)
    bind_log_context(caller=caller.name, **({"realm": realm} if realm else {}))
    return caller


def client_certificate(scope: Scope) -> CertificateIdentity | None:
    """The identity of the client certificate the TLS listener verified (the ASGI TLS
    extension's `client_cert_chain`), if the connection presented one."""
    tls = scope.get("extensions", {}).get("tls", {})
    chain = tls.get("client_cert_chain") or []
    return certificate_identity(chain[0]) if chain else None


@functools.lru_cache(maxsize=1024)
def certificate_identity(pem: str) -> CertificateIdentity | None:
    # Cached: a kept-alive caller presents the same certificate on every request.
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        return None  # verified by the handshake, yet unreadable here: no identity
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = tuple(names.get_values_for_type(x509.UniformResourceIdentifier))
    except x509.ExtensionNotFound:
        uris = ()
    return CertificateIdentity(uris=uris, subject=cert.subject.rfc4514_string())


def requires(role: Role) -> Callable[..., Awaitable[Caller]]:
    """A dependency admitting only callers with `role` (admin implies auditor); 403 else."""

    async def caller_with_role(
        request: Request,
        caller: Annotated[Caller, Depends(authenticate)],
        state: Annotated[AppState, Depends(app_state)],
    ) -> Caller:
        await state.gate.require_role(caller, role, ctx=request_context(request))
        return caller

    return caller_with_role


def request_context(request: Request) -> RequestContext:
    return context_of(request.scope)


def context_of(scope: Scope) -> RequestContext:
    # The source address the middleware worked out (trusted proxies' X-Forwarded-For).
    state = scope.get("state") or {}
    client_ip = state.get("client_ip")
    if client_ip is None and (client := scope.get("client")):
        client_ip = client[0]
    return RequestContext(request_id=state.get("request_id"), client_ip=client_ip)


async def _request_context(request: Request) -> RequestContext:
    # async: FastAPI runs a plain `def` dependency in a worker thread, a hop per request.
    return request_context(request)


async def broker(state: Annotated[AppState, Depends(app_state)]) -> TokenBroker:
    return state.broker


CallerDep = Annotated[Caller, Depends(authenticate)]
AuditorDep = Annotated[Caller, Depends(requires("auditor"))]
AdminDep = Annotated[Caller, Depends(requires("admin"))]
BrokerDep = Annotated[TokenBroker, Depends(broker)]
ContextDep = Annotated[RequestContext, Depends(_request_context)]
StateDep = Annotated[AppState, Depends(app_state)]
