"""FastAPI dependencies: the caller, the broker and the request context as `Annotated` aliases."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Annotated

from cryptography import x509
from fastapi import Depends, Request

from broker.core import rules
from broker.core.broker import TokenBroker
from broker.core.context import RequestContext
from broker.core.errors import Unauthenticated
from broker.core.policy import Caller, CertificateIdentity, Role
from broker.http.state import AppState
from broker.logs import bind_log_context


def app_state_of(request: Request) -> AppState:
    state: AppState = request.state.app
    return state


async def app_state(request: Request) -> AppState:
    return app_state_of(request)


def bearer_credential(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthenticated("send 'Authorization: Bearer <api key or workload JWT>'")
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise Unauthenticated("the Authorization header must use the Bearer scheme")
    return credential


async def authenticate(request: Request, state: Annotated[AppState, Depends(app_state)]) -> Caller:
    """The caller its Bearer credential proves (an API key or a workload JWT), within its
    rate limit. Refusals are audited (`broker.core.identity`)."""
    ctx = request_context(request)
    realm = request.path_params.get("realm")
    realm = realm if isinstance(realm, str) and rules.is_valid_realm(realm) else None
    # A token request, whether the v1 API or the drop-in OAuth2 endpoint (DELETE evicts).
    token_request = request.url.path.endswith("/token") and request.method != "DELETE"
    if "authorization" not in request.headers:
        identity = client_certificate(request)
        if identity is not None:
            caller = await state.gate.admit_certificate(
                identity, ctx=ctx, realm=realm, token_request=token_request
            )
            bind_log_context(caller=caller.name, **({"realm": realm} if realm else {}))
            return caller
    try:
        credential = bearer_credential(request)
    except Unauthenticated as exc:
        await state.gate.refused(exc, ctx=ctx, realm=realm, reason="no-bearer-credential")
        raise
    caller = await state.gate.admit(credential, ctx=ctx, realm=realm, token_request=token_request)
    bind_log_context(caller=caller.name, **({"realm": realm} if realm else {}))
    return caller


def client_certificate(request: Request) -> CertificateIdentity | None:
    """The identity of the client certificate the TLS listener verified (the ASGI TLS
    extension's `client_cert_chain`), if the connection presented one."""
    tls = request.scope.get("extensions", {}).get("tls", {})
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
    # The source address the middleware worked out (trusted proxies' X-Forwarded-For).
    client_ip = getattr(request.state, "client_ip", None)
    if client_ip is None and request.client:
        client_ip = request.client.host
    return RequestContext(
        request_id=getattr(request.state, "request_id", None), client_ip=client_ip
    )


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
