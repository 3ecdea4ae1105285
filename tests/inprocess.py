"""The broker in the test process: the app from `create_app`, its lifespan run around
an `httpx.AsyncClient` whose requests go through `httpx.ASGITransport` straight into the
app. A failure then points at a route, a dependency or the problem mapping, not at a
subprocess."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from broker.http.app import create_app
from broker.settings import Settings
from callers import PolicyWriter
from stack import Realm, Stack, bearer
from workload_issuer import WorkloadIssuer

CLIENT_IP = "10.20.30.40"
PROBLEM = "application/problem+json"
__all__ = ["Api", "bearer", "in_process", "problem_of", "settings_for", "slug", "write_policy"]
# Refills one request every 100 s: nothing refills while a module runs.
SLOW = {"per_second": 0.01}


@contextlib.asynccontextmanager
async def in_process(
    settings: Settings, *, raise_app_exceptions: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose requests go straight into the app, its lifespan running around it.

    An exception no handler maps is raised in the test, unless `raise_app_exceptions` is
    off (then the client sees the 500 the server would send)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:

        async def with_lifespan_state(scope: Any, receive: Any, send: Any) -> None:
            # What the server does for every request: a shallow copy of the lifespan state.
            await app({**scope, "state": dict(state or {})}, receive, send)

        transport = httpx.ASGITransport(
            app=with_lifespan_state,
            client=(CLIENT_IP, 40000),
            raise_app_exceptions=raise_app_exceptions,
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://broker.test") as client:
            yield client


def problem_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The problem+json body of `response`, which must have `status`."""
    assert status == response.status_code, response.text
    assert PROBLEM == response.headers["content-type"]
    body: dict[str, Any] = response.json()
    assert status == body["status"]
    assert response.headers["x-request-id"] == body["request_id"]
    return body


def slug(body: dict[str, Any]) -> str:
    problem_type: str = body["type"]
    return problem_type.rsplit("/", 1)[-1]


@dataclass
class Keys:
    """The callers of the layer's policy, by role."""

    everything: str
    limited: str
    auditor: str
    admin: str
    throttled: str
    workload_subject: str


@dataclass
class Api:
    """What a test needs: the client, the callers' keys, realms and the stack's servers."""

    client: httpx.AsyncClient
    keys: Keys
    realm: Realm  # a working realm, in Vault and at the IdP
    limited_realm: Realm  # the only realm the limited caller may use
    stack: Stack
    issuer: WorkloadIssuer

    async def token(self, realm: str, key: str, **params: Any) -> httpx.Response:
        response = await self.client.get(
            f"/v1/realms/{realm}/token", params=params, headers=bearer(key)
        )
        self.stack.served_tokens(response)
        return response


def write_policy(path: Path, stack: Stack, issuer: WorkloadIssuer, limited: str) -> Keys:
    policy = PolicyWriter(path, stack.leak_watch)
    keys = Keys(
        everything=policy.key_caller("api-all", realms=("*",)),
        limited=policy.key_caller("api-limited", realms=(limited,)),
        auditor=policy.key_caller("api-auditor", roles=("auditor",)),
        admin=policy.key_caller("api-admin", realms=("*",), roles=("admin",)),
        throttled=policy.key_caller("api-throttled", realms=("*",), rate_limit={**SLOW}),
        workload_subject="system:serviceaccount:api:workload",
    )
    policy.subject_caller("api-workload", keys.workload_subject, realms=("*",))
    policy.jwt_issuers.append(issuer.spec())
    policy.write()
    return keys


def settings_for(stack: Stack, policy_file: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "vault_addr": stack.openbao.addr,
        "vault_token": SecretStr(stack.openbao.root_token),
        "idp_url": stack.idp.url,
        "redis_url": "memory://",
        "key_prefix": f"api-{uuid.uuid4().hex[:8]}",
        "policy_file": policy_file,
        "audit_spool_dir": stack.log_dir / "spool",
    }
    values.update(overrides)
    return Settings(**values)
