"""Admin operations on a realm: rotate its credentials, evict its token everywhere."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from broker.core.context import RequestContext
from broker.core.errors import Forbidden
from broker.core.models import RealmStatus
from broker.core.policy import Caller
from broker.http.deps import BrokerDep, CallerDep, ContextDep, StateDep
from broker.http.problems import problem_responses
from broker.http.routes.tokens import RealmPath
from broker.http.state import AppState

router = APIRouter(tags=["admin"])


class RealmStatusBody(BaseModel):
    realm: str = Field(examples=["acme"])
    cached: bool = Field(description="A valid token is cached on this replica.")
    expires_at: datetime | None = Field(description="Expiry of the cached token.")
    last_refresh: datetime | None = Field(description="Last successful fetch from the IdP.")
    credential_version: int | None = Field(description="Vault version of the loaded secret.")
    last_error: str | None = Field(description="The last fetch failure, cleared by a success.")

    @classmethod
    def of(cls, status: RealmStatus) -> RealmStatusBody:
        def moment(epoch: float | None) -> datetime | None:
            return datetime.fromtimestamp(epoch, UTC) if epoch is not None else None

        return cls(
            realm=status.realm,
            cached=status.cached,
            expires_at=moment(status.expires_at),
            last_refresh=moment(status.last_refresh),
            credential_version=status.credential_version,
            last_error=status.last_error,
        )


async def require_admin(
    caller: Caller, realm: str, *, state: AppState, ctx: RequestContext
) -> None:
    """Admins act on the realms their policy entry lists ("*" for all); a refusal is
    audited like every other."""
    if caller.has_role("admin") and caller.may_use(realm):
        return
    refusal = Forbidden(f"caller {caller.name!r} may not administer realm {realm!r}")
    reason = "realm-not-allowed" if caller.has_role("admin") else "role-required"
    await state.gate.refused(refusal, ctx=ctx, caller=caller.name, realm=realm, reason=reason)
    raise refusal


@router.post(
    "/v1/realms/{realm}/rotate",
    response_model=RealmStatusBody,
    summary="Re-read the realm's credentials, drop its token everywhere, fetch a new one",
    responses=problem_responses(401, 403, 404, 422, 502, 503),
)
async def rotate(
    realm: RealmPath, caller: CallerDep, broker: BrokerDep, ctx: ContextDep, state: StateDep
) -> RealmStatusBody:
    await require_admin(caller, realm, state=state, ctx=ctx)
    return RealmStatusBody.of(await broker.rotate(realm, actor=caller.name, ctx=ctx))


@router.delete(
    "/v1/realms/{realm}/token",
    status_code=204,
    summary="Evict the realm's cached token on every replica",
    responses=problem_responses(401, 403, 422, 503),
)
async def evict(
    realm: RealmPath, caller: CallerDep, broker: BrokerDep, ctx: ContextDep, state: StateDep
) -> Response:
    await require_admin(caller, realm, state=state, ctx=ctx)
    await broker.evict(realm, actor=caller.name, ctx=ctx)
    return Response(status_code=204)
