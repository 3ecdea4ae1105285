"""The benchmark's helpers: what it reads from `/metrics`, py-spy and RSS samples, the
framework-limit apps it measures beside the broker, and how it words a missed goal."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest

# The benchmark is a top-level package beside tests/, not installed; `tests/bench` (on
# pytest's pythonpath) would otherwise be found as `bench`.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.endurance import growth_per_ten_minutes
from bench.limit_apps import build
from bench.profile import top_functions
from bench.promtext import sample_total
from bench.report import at_least

_TOKEN = 'route="/v1/realms/{realm}/token"'
_COUNT = "atlas_broker_http_request_duration_seconds_count"
EXPOSITION = f"""\
# HELP atlas_broker_http_request_duration_seconds Time to answer HTTP requests.
# TYPE atlas_broker_http_request_duration_seconds histogram
atlas_broker_http_request_duration_seconds_bucket{{le="0.001",{_TOKEN},status="2xx"}} 3.0
{_COUNT}{{{_TOKEN},status="2xx"}} 1200.0
{_COUNT}{{{_TOKEN},status="4xx"}} 7.0
{_COUNT}{{route="/metrics",status="2xx"}} 2.0
"""


def test_sample_total_sums_the_samples_whose_labels_match() -> None:
    name = "atlas_broker_http_request_duration_seconds_count"
    assert sample_total(EXPOSITION, name, route="/v1/realms/{realm}/token") == 1207.0
    assert sample_total(EXPOSITION, name, route="/v1/realms/{realm}/token", status="2xx") == 1200.0
    assert sample_total(EXPOSITION, name, route="/nowhere") == 0.0


def test_growth_is_the_least_squares_slope_after_the_settling_time() -> None:
    mib = 2**20
    # 30 MiB while settling, then 40 MiB growing by 1 MiB a minute.
    samples = [(float(t), 30 * mib) for t in range(0, 60, 5)]
    samples += [(float(t), 40 * mib + (t - 60) / 60 * mib) for t in range(60, 600, 5)]
    assert growth_per_ten_minutes(samples, settle=60) == pytest.approx(10.0)


def test_growth_needs_two_samples_after_settling() -> None:
    assert growth_per_ten_minutes([(0.0, 1), (70.0, 2)], settle=60) is None


def test_top_functions_counts_leaves_as_self_and_each_frame_once_as_inclusive() -> None:
    raw = [
        "main (app.py);serve (uvicorn/server.py);handle (broker/http/app.py) 6",
        "main (app.py);serve (uvicorn/server.py) 2",
        "main (app.py);handle (broker/http/app.py);handle (broker/http/app.py) 2",
        "Thread._bootstrap (threading.py);_worker (concurrent/futures/thread.py) 5",
    ]
    top = top_functions(raw, limit=10)
    assert top.samples == 10
    assert top.other_threads == 5
    assert top.self_share["handle (broker/http/app.py)"] == pytest.approx(0.8)
    assert top.inclusive_share["handle (broker/http/app.py)"] == pytest.approx(0.8)
    assert top.inclusive_share["serve (uvicorn/server.py)"] == pytest.approx(0.8)
    assert "main (app.py)" not in top.self_share
    assert "main (app.py)" not in top.inclusive_share  # on every stack: says nothing


@pytest.mark.parametrize("kind", ["raw", "fastapi"])
def test_limit_apps_answer_exactly_the_given_body_and_headers(kind: str) -> None:
    body = b'{"access_token":"t","token_type":"Bearer"}'
    headers = [
        ("content-type", "application/json"),
        ("cache-control", "no-store"),
        ("pragma", "no-cache"),
        ("x-request-id", "0f" * 16),
    ]

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=build(kind, body, headers))
        async with httpx.AsyncClient(transport=transport, base_url="http://limit") as client:
            return await client.get("/v1/realms/any/token")

    response = asyncio.run(get())
    assert response.status_code == 200
    assert response.content == body
    assert sorted(response.headers.multi_items()) == sorted(
        [*headers, ("content-length", str(len(body)))]
    )


def test_a_missed_goal_says_how_far_it_is() -> None:
    check = at_least("cached token ≥ 1x OpenBao", 750, 1000, 1.0, "OpenBao")
    assert check.met is False
    assert "0.75x" in check.measured
    assert "short by 250 req/s (+33% needed)" in check.measured
