"""The token and gateway routes' plain-ASGI path (`broker.http.hot_routes`): it answers
exactly as the FastAPI routes do, passes on what it does not take, and every request it
answers is timed, logged and identified like any other."""

from __future__ import annotations

import logging

import pytest

from broker.http.hot_routes import token_query
from inprocess import Api, bearer, problem_of, slug


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"", (60, None)),
        (b"min_ttl=0", (0, None)),
        (b"min_ttl=86400", (86400, None)),
        (b"scope=reports.read&min_ttl=30", (30, "reports.read")),
        (b"min_ttl=10&min_ttl=20", (20, None)),  # the last counts, as with FastAPI
        (b"unknown=1", (60, None)),
    ],
)
def test_plain_queries_are_taken(query: bytes, expected: tuple[int, str | None]) -> None:
    assert expected == token_query(query)


@pytest.mark.parametrize(
    "query",
    [
        b"min_ttl=060",
        b"min_ttl=1e3",
        b"min_ttl=-1",
        b"min_ttl=86401",
        b"min_ttl=+5",
        b"min_ttl=",
        b"scope=" + b"a" * 2049,
    ],
)
def test_other_spellings_are_left_to_fastapi(query: bytes) -> None:
    assert None is token_query(query)


async def test_a_request_passed_on_gets_the_same_answer(api: Api) -> None:
    """`min_ttl=060` is FastAPI's to validate (it takes it as 60): the answer has the
    same status, headers and token as the plain `min_ttl=60` the hot path answers."""
    plain = await api.token(api.realm.name, api.keys.everything, min_ttl="60")
    passed_on = await api.token(api.realm.name, api.keys.everything, min_ttl="060")
    assert (200, 200) == (plain.status_code, passed_on.status_code)
    assert plain.json()["access_token"] == passed_on.json()["access_token"]
    assert set(plain.json()) == set(passed_on.json())
    ignored = {"x-request-id", "date"}
    assert {(k, v) for k, v in plain.headers.items() if k not in ignored} - {
        ("content-length", plain.headers["content-length"])
    } == {(k, v) for k, v in passed_on.headers.items() if k not in ignored} - {
        ("content-length", passed_on.headers["content-length"])
    }


@pytest.mark.parametrize("min_ttl", ["-1", "86401", "soon"])
async def test_an_invalid_min_ttl_is_fastapis_422(api: Api, min_ttl: str) -> None:
    response = await api.token(api.realm.name, api.keys.everything, min_ttl=min_ttl)
    assert "invalid-request" == slug(problem_of(response, 422))


async def test_a_refusal_has_the_same_problem_document_either_way(api: Api) -> None:
    """A 403 from the hot path and from the FastAPI route: same document but the id."""
    hot = await api.token(api.realm.name, api.keys.limited, min_ttl="60")
    passed_on = await api.token(api.realm.name, api.keys.limited, min_ttl="060")
    hot_body, other_body = problem_of(hot, 403), problem_of(passed_on, 403)
    assert hot_body.pop("request_id") != other_body.pop("request_id")
    assert hot_body == other_body


async def test_an_answered_request_has_one_access_line(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Method, path without its query, status and duration, with the request id, caller
    and realm from the request's log context."""
    with caplog.at_level(logging.INFO, logger="broker.access"):
        response = await api.client.get(
            f"/v1/realms/{api.realm.name}/token?min_ttl=5",
            headers={**bearer(api.keys.everything), "X-Request-ID": "hot-line-1"},
        )
    assert 200 == response.status_code
    lines = [r for r in caplog.records if r.name == "broker.access"]
    assert [f"GET /v1/realms/{api.realm.name}/token 200"] == [r.getMessage() for r in lines]
    assert 200 == lines[0].status
    assert lines[0].duration_ms > 0


async def test_the_route_template_reaches_the_request_metrics(api: Api) -> None:
    """Requests the hot path answers count under the route's template, not `_other`."""
    await api.token(api.realm.name, api.keys.everything)
    await api.client.get(
        f"/v1/realms/{api.realm.name}/gateway", headers=bearer(api.keys.everything)
    )
    metrics = (await api.client.get("/metrics")).text
    for template in ("/v1/realms/{realm}/token", "/v1/realms/{realm}/gateway"):
        assert f'route="{template}",status="2xx"' in metrics


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v1/realms/{realm}/token?scope=%00", {}),
        ("/v1/realms/{realm}/token?scope=" + "+".join(f"s{i}" for i in range(17)), {}),
        ("/v1/realms/{realm}/token?min_ttl=%ZZ", {}),
        ("/v1/realms/{realm}/token?min_ttl=1&min_ttl=", {}),
        ("/v1/realms/a%2Fb/token", {}),
        ("/v1/realms/{realm}/gateway/%00", {"Authorization": "Bearer " + "x" * 8000}),
        ("/v1/realms/{realm}/token", {"Authorization": b"Bearer \xe9\xff"}),
    ],
    ids=[
        "nul-scope",
        "17-scopes",
        "bad-percent",
        "empty-last-min-ttl",
        "encoded-slash-realm",
        "long-credential",
        "latin-1-credential",
    ],
)
async def test_malformed_input_on_the_hot_path_is_a_4xx_problem(
    api: Api, path: str, headers: dict[str, str | bytes]
) -> None:
    """Whichever path takes it, a malformed request is a 4xx problem document (the
    forward route's escapes: tests/security/test_forward_escape.py)."""
    sent: dict[str, str | bytes] = {**bearer(api.keys.everything), **headers}
    response = await api.client.get(path.format(realm=api.realm.name), headers=sent)
    assert 400 <= response.status_code < 500, response.text
    assert "application/problem+json" == response.headers["content-type"]
    assert api.keys.everything not in response.text
