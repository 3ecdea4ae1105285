"""FastAPI dependencies: the caller, the broker and the request context as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from broker.core.broker import TokenBroker
from broker.core.context import RequestContext
from broker.core.errors import Unauthenticated
from broker.core.policy import Caller
from broker.http.state import AppState


def app_state(request: Request) -> AppState:
    state: AppState = request.state.app
    return state


def bearer_credential(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthenticated("send 'Authorization: Bearer <api key>'")
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise Unauthenticated("the Authorization header must use the Bearer scheme")
    return credential


def authenticate(request: Request, state: Annotated[AppState, Depends(app_state)]) -> Caller:
    caller = state.policy.current().caller_for_key(bearer_credential(request))
    if caller is None:
        raise Unauthenticated("unknown caller credential")
    return caller


def request_context(request: Request) -> RequestContext:
    return RequestContext(
        request_id=getattr(request.state, "request_id", None),
        client_ip=request.client.host if request.client else None,
    )


def broker(state: Annotated[AppState, Depends(app_state)]) -> TokenBroker:
    return state.broker


CallerDep = Annotated[Caller, Depends(authenticate)]
BrokerDep = Annotated[TokenBroker, Depends(broker)]
ContextDep = Annotated[RequestContext, Depends(request_context)]
StateDep = Annotated[AppState, Depends(app_state)]
