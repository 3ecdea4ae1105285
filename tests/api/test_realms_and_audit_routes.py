"""`GET /v1/realms` and `GET /v1/audit` in process: what each role sees, the audit
trail's filters and paging, and their refusals."""

from __future__ import annotations

import uuid

import pytest

from inprocess import Api, bearer, problem_of, slug


async def test_plain_caller_sees_only_its_realms_without_status(api: Api) -> None:
    """The limited caller's list is its one realm, with no status fields."""
    response = await api.client.get("/v1/realms", headers=bearer(api.keys.limited))
    assert 200 == response.status_code, response.text
    assert [{"realm": api.limited_realm.name}] == response.json()["realms"]
    assert "no-store" == response.headers["cache-control"]


async def test_auditor_sees_every_realm_with_its_status(api: Api) -> None:
    """An auditor sees the realms in Vault with their status on this replica."""
    await api.token(api.realm.name, api.keys.everything)
    response = await api.client.get("/v1/realms", headers=bearer(api.keys.auditor))
    entries = {entry["realm"]: entry for entry in response.json()["realms"]}
    assert {api.realm.name, api.limited_realm.name} <= set(entries)
    assert (True, 1) == (
        entries[api.realm.name]["cached"],
        entries[api.realm.name]["credential_version"],
    )


async def test_realm_list_counts_against_the_callers_rate_limit(api: Api) -> None:
    """The rate limit guards every authenticated route: past its burst a caller's realm
    list is a 429 with Retry-After."""
    responses = [
        await api.client.get("/v1/realms", headers=bearer(api.keys.throttled)) for _ in range(2)
    ]
    assert "rate-limited" == slug(problem_of(responses[-1], 429))
    assert int(responses[-1].headers["retry-after"]) >= 1


async def test_realm_list_needs_a_credential(api: Api) -> None:
    """Without a credential the realm list is a 401."""
    problem_of(await api.client.get("/v1/realms"), 401)


async def test_auditor_reads_the_issuance_of_a_request(api: Api) -> None:
    """A served token appears in the trail as token.issued with its request id, caller
    and client address, and without the token."""
    request_id = uuid.uuid4().hex
    served = await api.client.get(
        f"/v1/realms/{api.realm.name}/token",
        headers={**bearer(api.keys.everything), "X-Request-ID": request_id},
    )
    api.stack.served_tokens(served)
    response = await api.client.get(
        "/v1/audit",
        params={"realm": api.realm.name, "event": "token.issued", "limit": 1000},
        headers=bearer(api.keys.auditor),
    )
    assert 200 == response.status_code, response.text
    matching = [e for e in response.json()["events"] if e.get("request_id") == request_id]
    assert [("api-all", "10.20.30.40")] == [(e["caller"], e["client_ip"]) for e in matching]
    assert served.json()["access_token"] not in response.text
    assert "no-store" == response.headers["cache-control"]


async def test_audit_pages_follow_the_cursor_newest_first(api: Api) -> None:
    """Pages of one event follow next_cursor to older events, never repeating one."""
    for _ in range(3):
        await api.token(api.realm.name, api.keys.everything)
    seen: list[str] = []
    cursor = None
    for _ in range(3):
        params: dict[str, str | int] = {"realm": api.realm.name, "limit": 1}
        params.update({"cursor": cursor} if cursor else {})
        page = (
            await api.client.get("/v1/audit", params=params, headers=bearer(api.keys.auditor))
        ).json()
        seen += [event["id"] for event in page["events"]]
        cursor = page["next_cursor"]
    assert (3, 3) == (len(seen), len(set(seen)))


async def test_admin_reads_the_audit_trail(api: Api) -> None:
    """Admins are auditors too."""
    response = await api.client.get("/v1/audit", headers=bearer(api.keys.admin))
    assert 200 == response.status_code, response.text


async def test_plain_caller_may_not_read_the_audit_trail(api: Api) -> None:
    """A caller without the auditor role gets 403 from the audit trail."""
    response = await api.client.get("/v1/audit", headers=bearer(api.keys.everything))
    assert "forbidden" == slug(problem_of(response, 403))


async def test_audit_trail_needs_a_credential(api: Api) -> None:
    """Without a credential the audit trail is a 401 with a Bearer challenge."""
    response = await api.client.get("/v1/audit")
    problem_of(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "params",
    [
        {"since": "yesterday"},
        {"since": "2026-11-27T00:00:00"},
        {"since": "2026-11-28T00:00:00Z", "until": "2026-11-27T00:00:00Z"},
        {"limit": "0"},
        {"limit": "1001"},
        {"realm": "bad realm"},
        {"event": "NotAnEvent"},
        {"cursor": "not-a-cursor"},
    ],
    ids=[
        "since-text",
        "since-naive",
        "since-after-until",
        "limit-0",
        "limit-big",
        "realm",
        "event",
        "cursor",
    ],
)
async def test_malformed_audit_query_is_422(api: Api, params: dict[str, str]) -> None:
    """A malformed filter, time range, limit or cursor is a 422 problem."""
    response = await api.client.get("/v1/audit", params=params, headers=bearer(api.keys.auditor))
    assert "invalid-request" == slug(problem_of(response, 422))
