"""``create_idp_app``: the development IdP as one FastAPI app, state built per app.

No module-level state: every app owns its realms, keys, counters and faults, so tests can
run many side by side. FastAPI's own docs are off; this app imitates Keycloak's surface.
"""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atlas_broker_dev.idp.config import IdPConfig
from atlas_broker_dev.idp.control import control_router
from atlas_broker_dev.idp.oauth import oauth_router
from atlas_broker_dev.idp.state import IdPState

access_logger = logging.getLogger("atlas_broker_dev.idp.access")


def create_idp_app(config: IdPConfig) -> FastAPI:
    """A development IdP serving ``config``'s realms, with a fresh RSA key per realm."""
    state = IdPState(config)
    app = FastAPI(
        title="Atlas development IdP (not for production)",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.include_router(oauth_router(state))
    app.include_router(control_router(state))
    app.add_middleware(AccessLogMiddleware)
    return app


class AccessLogMiddleware:
    """One log line per request with method, path, status and duration.

    Replaces uvicorn's access log, which prints the query string: a client that puts its
    secret there by mistake must not see it written to the log. Paths hold only realm
    names and client ids, which are not secret.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 0

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            access_logger.info(
                "%s %s %d %.1fms",
                scope["method"],
                scope["path"],
                status,
                (time.monotonic() - started) * 1000,
            )
