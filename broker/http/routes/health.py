"""Liveness and readiness: different questions (is the process alive / can it serve)."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from broker.core.errors import BrokerError
from broker.http.deps import StateDep
from broker.http.state import Pingable

router = APIRouter(tags=["health"])

CheckState = Literal["ok", "failing"]


class Liveness(BaseModel):
    status: Literal["alive"] = "alive"


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, CheckState]


@router.get("/healthz", response_model=Liveness, summary="The process is alive")
async def healthz() -> Liveness:
    return Liveness()


async def _check(dependency: Pingable) -> CheckState:
    try:
        await asyncio.wait_for(dependency.ping(), timeout=2.0)
    except (BrokerError, TimeoutError, OSError):
        return "failing"
    return "ok"


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Whether the broker can serve, with each dependency's state",
    responses={503: {"model": Readiness, "description": "The broker cannot serve."}},
)
async def readyz(state: StateDep) -> JSONResponse:
    names = list(state.dependencies)
    results = await asyncio.gather(*(_check(state.dependencies[n]) for n in names))
    checks = dict(zip(names, results, strict=True))
    # Redis is optional for serving (replicas fall back to themselves); Vault is needed
    # only while no realm's credentials are loaded yet.
    can_serve = checks.get("vault") == "ok" or state.broker.has_credentials()
    body = Readiness(status="ready" if can_serve else "not_ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if can_serve else 503)
