"""`GET /v1/audit`: the audit trail, newest first, for auditors and admins.

An auditor or admin whose policy entry lists realms reads the events of those realms
only (`*` or no list: every event); asking for another realm is a 403, audited."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from broker.core import rules
from broker.core.audit_query import CURSOR_PATTERN, AuditQuery
from broker.core.errors import Forbidden, InvalidRequest
from broker.http.deps import AuditorDep, StateDep, request_context
from broker.http.problems import problem_responses

router = APIRouter(tags=["audit"])

EVENT_PATTERN = r"^[a-z]+(\.[a-z_]+)+$"
# Audit times are rendered with four-digit years; earlier instants cannot be in the trail.
_EPOCH_MIN, _EPOCH_MAX = 0.0, 253_402_300_799.0

_EXAMPLE = {
    "id": "8f14e45fceea167a5a36dedd4bea2543",
    "time": "2026-11-27T19:00:00.123Z",
    "event": "token.issued",
    "caller": "billing-api",
    "realm": "acme",
    "outcome": "success",
    "source": "cache",
    "token_sha256": "3b1f0c9a2d4e5f60",
    "token_expires_at": "2026-11-27T20:00:00Z",
    "request_id": "5f0c6c1e8a2b4d7e9f10a1b2c3d4e5f6",
    "client_ip": "10.0.0.7",
}


class AuditEventsPage(BaseModel):
    events: list[dict[str, Any]] = Field(
        description="Audit events, newest first, each one JSON object with at least "
        "`id`, `time`, `event`, `outcome` and, where they apply, `caller`, `realm`, "
        "`reason`, `source`, `token_sha256` (a SHA-256 prefix, never the token), "
        "`token_expires_at`, `credential_version`, `request_id` and `client_ip`.",
        examples=[[_EXAMPLE]],
    )
    next_cursor: str | None = Field(
        description="Pass as `cursor` for older events; null at the end of the trail. A "
        "page may hold fewer than `limit` events while more follow.",
        examples=["1764270000123-0"],
    )


def parse_instant(name: str, value: str | None) -> float | None:
    """An RFC 3339 date-time with an offset (`2026-11-27T19:00:00Z`) as epoch seconds."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{name}: not an RFC 3339 date-time") from None
    if moment.tzinfo is None:
        raise InvalidRequest(f"{name}: needs a UTC offset, e.g. a trailing Z")
    epoch = moment.timestamp()
    if not _EPOCH_MIN <= epoch <= _EPOCH_MAX:
        raise InvalidRequest(f"{name}: out of range")
    return epoch


@router.get(
    "/v1/audit",
    response_model=AuditEventsPage,
    summary="Read the audit trail, newest first",
    responses=problem_responses(401, 403, 422, 429, 503),
)
async def read_audit(
    caller: AuditorDep,
    state: StateDep,
    request: Request,
    response: Response,
    realm: Annotated[str | None, Query(pattern=rules.REALM_PATTERN)] = None,
    caller_name: Annotated[
        str | None, Query(alias="caller", min_length=1, max_length=128, description="Caller name.")
    ] = None,
    event: Annotated[
        str | None, Query(pattern=EVENT_PATTERN, max_length=64, examples=["token.denied"])
    ] = None,
    since: Annotated[
        str | None,
        Query(
            max_length=64,
            description="RFC 3339, inclusive.",
            examples=["2026-11-27T00:00:00Z"],
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
    until: Annotated[
        str | None,
        Query(
            max_length=64,
            description="RFC 3339, exclusive.",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[
        str | None, Query(pattern=CURSOR_PATTERN, description="`next_cursor` of the last page.")
    ] = None,
) -> AuditEventsPage:
    if realm is not None and not caller.may_see(realm):
        refusal = Forbidden(f"caller {caller.name!r} may not read realm {realm!r}'s audit trail")
        await state.gate.refused(
            refusal, ctx=request_context(request), caller=caller.name, realm=realm
        )
        raise refusal
    start, end = parse_instant("since", since), parse_instant("until", until)
    if start is not None and end is not None and start >= end:
        raise InvalidRequest("since must be before until")
    page = await state.audit_trail.query(
        AuditQuery(
            realm=realm,
            caller=caller_name,
            event=event,
            since=start,
            until=end,
            limit=limit,
            cursor=cursor,
            visible_realms=caller.visible_realms(),
        )
    )
    response.headers["Cache-Control"] = "no-store"
    return AuditEventsPage(events=page.events, next_cursor=page.next_cursor)
