"""The 5xx problems, in process: what a failing IdP, Vault, Redis or workload issuer
becomes (502 for an answer that is wrong, 503 with Retry-After for one that does not
come)."""

from __future__ import annotations

import secrets
from pathlib import Path

from atlas_broker_dev.processes import free_port
from callers import PolicyWriter
from inprocess import Api, bearer, in_process, problem_of, settings_for, slug
from workload_issuer import AUDIENCE


async def test_idp_refusing_the_credentials_is_502(api: Api) -> None:
    """A realm whose secret in Vault the IdP does not accept is 502 idp-rejected."""
    realm = api.stack.new_realm("api-rejected", in_vault=False)
    api.stack.openbao.write_realm(
        realm.name, {"client_id": realm.client_id, "client_secret": secrets.token_urlsafe(16)}
    )
    response = await api.token(realm.name, api.keys.everything)
    assert "idp-rejected" == slug(problem_of(response, 502))


async def test_idp_answering_junk_is_502(api: Api) -> None:
    """An IdP answer that is not a token response is 502 idp-bad-response."""
    realm = api.stack.new_realm("api-junk")
    api.stack.set_fault(realm.name, "garbage")
    response = await api.token(realm.name, api.keys.everything)
    assert "idp-bad-response" == slug(problem_of(response, 502))


async def test_incomplete_realm_secret_is_502(api: Api) -> None:
    """A realm secret without client_secret is 502 realm-credentials-invalid."""
    realm = api.stack.new_realm("api-incomplete", in_vault=False)
    api.stack.openbao.write_realm(realm.name, {"client_id": realm.client_id})
    response = await api.token(realm.name, api.keys.everything)
    assert "realm-credentials-invalid" == slug(problem_of(response, 502))


async def test_idp_unreachable_with_nothing_cached_is_503_with_retry_after(
    api: Api, policy_file: Path
) -> None:
    """An IdP that cannot be reached, no token cached: 503 idp-unavailable, Retry-After."""
    settings = settings_for(api.stack, policy_file, idp_url=f"http://127.0.0.1:{free_port()}")
    async with in_process(settings) as client:
        response = await client.get(
            f"/v1/realms/{api.realm.name}/token", headers=bearer(api.keys.everything)
        )
    assert "idp-unavailable" == slug(problem_of(response, 503))
    assert int(response.headers["retry-after"]) >= 1


async def test_vault_unreachable_is_503_and_not_ready(api: Api, policy_file: Path) -> None:
    """With Vault unreachable and nothing loaded, a token request is 503 with Retry-After,
    and /readyz answers 503 naming Vault as failing."""
    settings = settings_for(api.stack, policy_file, vault_addr=f"http://127.0.0.1:{free_port()}")
    async with in_process(settings) as client:
        response = await client.get(
            f"/v1/realms/{api.realm.name}/token",
            headers=bearer(api.keys.everything),
        )
        ready = await client.get("/readyz")
    assert "secret-source-unavailable" == slug(problem_of(response, 503))
    assert int(response.headers["retry-after"]) >= 1
    assert (503, "not_ready") == (ready.status_code, ready.json()["status"])
    assert "ok" != ready.json()["checks"]["vault"]


async def test_workload_issuer_keys_unreachable_is_503(api: Api, tmp_path: Path) -> None:
    """A workload JWT whose issuer's JWKS cannot be fetched is 503 jwks-unavailable with
    Retry-After, not a 401: the caller's credential may well be good."""
    policy = PolicyWriter(tmp_path / "policy.yaml", api.stack.leak_watch)
    policy.subject_caller("api-workload", api.keys.workload_subject, realms=("*",))
    dead_jwks = f"http://127.0.0.1:{free_port()}/jwks"
    policy.jwt_issuers.append(
        {"issuer": api.issuer.issuer, "jwks_url": dead_jwks, "audience": AUDIENCE}
    )
    async with in_process(settings_for(api.stack, policy.write())) as client:
        response = await client.get(
            f"/v1/realms/{api.realm.name}/token",
            headers=bearer(api.issuer.token(api.keys.workload_subject)),
        )
    assert "jwks-unavailable" == slug(problem_of(response, 503))
    assert int(response.headers["retry-after"]) >= 1


async def test_redis_unreachable_with_a_required_trail_refuses_and_cannot_be_read(
    api: Api, policy_file: Path, tmp_path: Path
) -> None:
    """With BROKER_AUDIT_REQUIRED, Redis unreachable and the spool unwritable, a token is
    refused with 503 audit-unavailable, and the audit trail answers 503
    token-store-unavailable; both with Retry-After."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    settings = settings_for(
        api.stack,
        policy_file,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        audit_required=True,
        audit_spool_dir=blocker / "spool",
    )
    async with in_process(settings) as client:
        token = await client.get(
            f"/v1/realms/{api.realm.name}/token", headers=bearer(api.keys.everything)
        )
        trail = await client.get("/v1/audit", headers=bearer(api.keys.auditor))
    assert "audit-unavailable" == slug(problem_of(token, 503))
    assert "token-store-unavailable" == slug(problem_of(trail, 503))
    assert min(int(r.headers["retry-after"]) for r in (token, trail)) >= 1
