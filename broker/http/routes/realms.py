"""`GET /v1/realms`: the realms a caller may use; for auditors and admins every realm
with its status on this replica."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from broker.core.audit import iso_time
from broker.core.models import RealmStatus
from broker.http.deps import CallerDep, StateDep
from broker.http.problems import problem_responses

router = APIRouter(tags=["realms"])


class RealmEntry(BaseModel):
    """A realm; the status fields are present for auditors and admins only."""

    realm: str = Field(examples=["acme"])
    cached: bool | None = Field(default=None, description="A valid token is cached here.")
    expires_at: str | None = Field(default=None, examples=["2026-11-27T20:13:05Z"])
    last_refresh: str | None = Field(
        default=None, description="Last successful fetch from the IdP."
    )
    credential_version: int | None = Field(default=None, description="Vault secret version.")
    last_error: str | None = Field(default=None, description="Last failure, cleared on success.")
    verify: str | None = Field(
        default=None,
        description="How the realm's tokens are checked: auto, jwks or none (once read).",
        examples=["auto"],
    )
    status: str | None = Field(
        default=None,
        description="`ok`, or `degraded`: the IdP refused a newer secret version and the "
        "realm serves with `credential_version`, the last one that worked.",
        examples=["ok"],
    )
    rejected_version: int | None = Field(
        default=None, description="The refused secret version while degraded."
    )

    @classmethod
    def of(cls, status: RealmStatus) -> RealmEntry:
        return cls(
            realm=status.realm,
            cached=status.cached,
            expires_at=iso_time(status.expires_at) if status.expires_at is not None else None,
            last_refresh=iso_time(status.last_refresh) if status.last_refresh else None,
            credential_version=status.credential_version,
            last_error=status.last_error,
            verify=status.verify,
            status="degraded" if status.degraded else "ok",
            rejected_version=status.rejected_version,
        )


class RealmList(BaseModel):
    realms: list[RealmEntry]


@router.get(
    "/v1/realms",
    response_model=RealmList,
    response_model_exclude_unset=True,
    summary="Realms the caller may use (all, with status, for auditors and admins)",
    responses=problem_responses(401, 429, 503),
)
async def list_realms(caller: CallerDep, state: StateDep, response: Response) -> RealmList:
    response.headers["Cache-Control"] = "no-store"
    if caller.has_role("auditor"):
        statuses = [s for s in await state.realms.statuses() if caller.may_see(s.realm)]
        return RealmList(realms=[RealmEntry.of(s) for s in statuses])
    return RealmList(
        realms=[RealmEntry(realm=name) for name in await state.realms.usable_by(caller)]
    )
