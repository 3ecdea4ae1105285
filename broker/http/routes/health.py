"""Liveness, readiness and metrics: is the process alive, can it serve, how is it doing."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from broker.http.deps import StateDep
from broker.http.health_monitor import CheckState

router = APIRouter(tags=["health"])


class Liveness(BaseModel):
    status: Literal["alive"] = "alive"


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, CheckState]


@router.get("/healthz", response_model=Liveness, summary="The process is alive")
async def healthz() -> Liveness:
    return Liveness()


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Whether the broker can serve, with each dependency's state",
    responses={503: {"model": Readiness, "description": "The broker cannot serve."}},
)
async def readyz(state: StateDep) -> JSONResponse:
    checks = await state.health.check()
    # Redis is optional for serving (replicas fall back to themselves); Vault is needed
    # only while no realm's credentials are loaded yet.
    can_serve = checks.get("vault") == "ok" or state.broker.has_credentials()
    # A background task the broker cannot live without crashed: not ready, and named.
    for task in state.tasks.failed():
        checks[f"task:{task}"] = "failing"
        can_serve = False
    body = Readiness(status="ready" if can_serve else "not_ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if can_serve else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(state: StateDep) -> Response:
    if state.settings.metrics_port is not None:
        # Served on its own listener only, where the NetworkPolicy admits the scraper.
        raise HTTPException(404, "Not Found")
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
