"""What the HTTP layer answers before or around a route, in process: unknown paths,
wrong methods, oversized headers, request ids, and an unexpected failure."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import broker.http.routes.tokens
from inprocess import Api, bearer, in_process, problem_of, settings_for, slug


async def test_unknown_path_is_a_404_problem(api: Api) -> None:
    """A path the API does not have answers 404 as problem+json."""
    response = await api.client.get("/v2/whatever", headers=bearer(api.keys.everything))
    assert "http-404" == slug(problem_of(response, 404))


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/v1/realms/acme/token", "DELETE, GET"),
        ("GET", "/v1/realms/acme/rotate", "POST"),
        ("DELETE", "/v1/realms", "GET"),
        ("GET", "/auth/realms/acme/protocol/openid-connect/token", "POST"),
    ],
)
async def test_wrong_method_is_405_naming_every_allowed_method(
    api: Api, method: str, path: str, allowed: str
) -> None:
    """A method the resource lacks is a 405 problem whose Allow lists every route's methods."""
    response = await api.client.request(method, path, headers=bearer(api.keys.everything))
    assert "http-405" == slug(problem_of(response, 405))
    assert allowed == response.headers["allow"]


async def test_oversized_headers_are_431_before_any_route(api: Api) -> None:
    """Headers beyond 16 KiB are refused with a 431 problem carrying the request id."""
    response = await api.client.get(
        f"/v1/realms/{api.realm.name}/token",
        headers={**bearer(api.keys.everything), "X-Padding": "x" * 17_000},
    )
    assert "request-header-fields-too-large" == slug(problem_of(response, 431))


async def test_well_formed_request_id_is_echoed(api: Api) -> None:
    """A well-formed X-Request-ID comes back on the response and in a problem body."""
    response = await api.client.get(
        f"/v1/realms/{api.realm.name}/token", headers={"X-Request-ID": "trace-42.a:b"}
    )
    assert "trace-42.a:b" == problem_of(response, 401)["request_id"]


@pytest.mark.parametrize("sent", ["has space", "x" * 129, "semi;colon", ""])
async def test_malformed_request_id_is_replaced(api: Api, sent: str) -> None:
    """A malformed X-Request-ID is not echoed: the response carries a new one."""
    response = await api.client.get("/healthz", headers={"X-Request-ID": sent})
    assert response.headers["x-request-id"] not in ("", sent)


async def test_every_response_has_a_request_id(api: Api) -> None:
    """Successful responses carry X-Request-ID too, a new one per request."""
    first, second = [await api.client.get("/healthz") for _ in range(2)]
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_unexpected_failure_is_a_500_problem_without_internals(
    api: Api, policy_file: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in a route is a generic 500 problem; the exception goes to the log only."""

    def broken(*_: object, **__: object) -> str:
        raise RuntimeError("internal detail that must not reach the caller")

    monkeypatch.setattr(broker.http.routes.tokens, "iso_time", broken)
    settings = settings_for(api.stack, policy_file)
    with caplog.at_level(logging.ERROR):
        async with in_process(settings, raise_app_exceptions=False) as client:
            response = await client.get(
                f"/v1/realms/{api.realm.name}/token", headers=bearer(api.keys.everything)
            )
    body = problem_of(response, 500)
    assert ("internal-error", False) == (slug(body), "internal detail" in response.text)
    assert any(record.exc_info for record in caplog.records)
