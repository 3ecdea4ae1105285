"""``/_dev`` control endpoints: counters, clients, lifetime and faults, changed at runtime.

They exist so integration tests and ``broker dev`` can rotate a secret, count IdP round
trips or make the token endpoint misbehave without restarting the process. With an
``admin_token`` configured they require ``Authorization: Bearer <admin_token>``.
Responses never echo a client secret.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any, Self

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from atlas_broker_dev.idp.config import AuthMethod, DevClient, RealmOptions, TokenFormat
from atlas_broker_dev.idp.state import Fault, FaultMode, IdPState

logger = logging.getLogger("atlas_broker_dev.idp")


class ClientBody(BaseModel):
    """Body of ``PUT /_dev/realms/{realm}/clients/{client_id}``."""

    model_config = ConfigDict(extra="forbid")
    client_secret: str = Field(min_length=1)
    scope: str | None = None
    scopes: list[str] | None = None


_BOTH_METHODS: tuple[AuthMethod, ...] = ("client_secret_basic", "client_secret_post")


class RealmBody(BaseModel):
    """Body of ``PUT /_dev/realms/{realm}``: how the realm looks (see ``RealmOptions``)."""

    model_config = ConfigDict(extra="forbid")
    token_format: TokenFormat = "jwt"
    discovery: bool = True
    path: str = "/auth/realms"
    auth_methods: list[AuthMethod] = Field(default_factory=lambda: list(_BOTH_METHODS))
    discovery_overrides: dict[str, str] = Field(default_factory=dict)
    issuer: str | None = None


class ConfigBody(BaseModel):
    """Body of ``PUT /_dev/config``; omitted fields stay as they are."""

    model_config = ConfigDict(extra="forbid")
    token_lifetime: int | None = Field(default=None, gt=0, strict=True)


class FaultBody(BaseModel):
    """Body of ``PUT /_dev/faults``: ``seconds`` is for ``delay`` only, ``count`` limits the
    fault to that many token requests (default: until cleared)."""

    model_config = ConfigDict(extra="forbid")
    mode: FaultMode
    realm: str | None = None
    seconds: float | None = Field(default=None, ge=0)
    count: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _seconds_only_for_delay(self) -> Self:
        if (self.mode == "delay") != (self.seconds is not None):
            raise ValueError("'seconds' is required for mode 'delay' and only allowed there")
        return self


def control_router(state: IdPState) -> APIRouter:
    """Routes under ``/_dev``, bound to one IdP's state."""

    def require_admin(request: Request) -> None:
        if state.admin_token is None:
            return
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        expected = state.admin_token.encode("utf-8")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode("utf-8"), expected
        ):
            raise HTTPException(401, "admin token required", {"WWW-Authenticate": "Bearer"})

    router = APIRouter(prefix="/_dev", dependencies=[Depends(require_admin)])

    @router.get("/stats")
    async def stats() -> dict[str, Any]:
        return state.stats()

    @router.post("/stats/reset")
    async def reset_stats() -> dict[str, Any]:
        state.reset_stats()
        return state.stats()

    @router.put("/realms/{realm}/clients/{client_id}")
    async def put_client(realm: str, client_id: str, body: ClientBody) -> dict[str, Any]:
        scopes = tuple(body.scopes) if body.scopes is not None else None
        try:
            client = DevClient(client_id, body.client_secret, body.scope, scopes)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        created = await state.put_client(realm, client)
        logger.info(
            "client %s realm=%s client_id=%s",
            "created" if created else "replaced",
            realm,
            client_id,
        )
        return {
            "realm": realm,
            "client_id": client_id,
            "scope": body.scope,
            "scopes": body.scopes,
            "created": created,
        }

    @router.put("/realms/{realm}")
    async def put_realm(realm: str, body: RealmBody) -> dict[str, Any]:
        try:
            options = RealmOptions(
                token_format=body.token_format,
                discovery=body.discovery,
                path=body.path,
                auth_methods=tuple(body.auth_methods),
                discovery_overrides=dict(body.discovery_overrides),
                issuer=body.issuer,
            )
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        await state.put_realm(realm, options)
        logger.info("realm options set realm=%s", realm)
        return {"realm": realm, **body.model_dump()}

    @router.delete("/realms/{realm}/clients/{client_id}", status_code=204)
    async def delete_client(realm: str, client_id: str) -> Response:
        if not state.delete_client(realm, client_id):
            raise HTTPException(404, "no such client")
        logger.info("client deleted realm=%s client_id=%s", realm, client_id)
        return Response(status_code=204)

    @router.delete("/realms/{realm}", status_code=204)
    async def delete_realm(realm: str) -> Response:
        if not state.delete_realm(realm):
            raise HTTPException(404, "no such realm")
        logger.info("realm deleted realm=%s", realm)
        return Response(status_code=204)

    @router.put("/config")
    async def put_config(body: ConfigBody) -> dict[str, Any]:
        if body.token_lifetime is not None:
            state.token_lifetime = body.token_lifetime
        return {"token_lifetime": state.token_lifetime}

    @router.put("/faults")
    async def put_fault(body: FaultBody) -> dict[str, Any]:
        fault = Fault(body.mode, body.realm, body.seconds or 0.0, body.count)
        state.faults[body.realm] = fault
        logger.info("fault set mode=%s realm=%s", fault.mode, fault.realm or "*")
        return {
            "mode": fault.mode,
            "realm": fault.realm,
            "seconds": fault.seconds,
            "count": fault.remaining,
        }

    @router.delete("/faults", status_code=204)
    async def clear_faults() -> Response:
        state.faults.clear()
        logger.info("faults cleared")
        return Response(status_code=204)

    return router
