"""The forward proxy's target rule (pure): `{api_url}/{path}?{query}` and nowhere else."""

from __future__ import annotations

import pytest

from broker.core.errors import ForwardPathRefused
from broker.core.forward_paths import target_url

BASE = "https://api.example.test/base"


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        ("api/v1/accountreports", "", f"{BASE}/api/v1/accountreports"),
        ("api/v1/reports", "year=2026&q=a%20b", f"{BASE}/api/v1/reports?year=2026&q=a%20b"),
        ("files/report%20one.pdf", "", f"{BASE}/files/report%20one.pdf"),
        ("a/b:c/d;e=f/~x/..x/x..", "", f"{BASE}/a/b:c/d;e=f/~x/..x/x.."),
        ("", "", f"{BASE}/"),
    ],
)
def test_ordinary_paths_stay_below_the_base(path: str, query: str, expected: str) -> None:
    """Paths of ordinary segments (escapes of ordinary characters too) keep the base."""
    assert expected == target_url(BASE + "/", path, query)


@pytest.mark.parametrize(
    "path",
    [
        "a%2Fb",
        "a%5cb",
        "a\\b",
        "..",
        "a/../b",
        "%2E%2E/x",
        ".%2e",
        "./x",
        "a//b",
        "/x",
        "@host/x",
        "a@b",
        "%25",
        "a%0a",
        "a%",
        "a%g0",
        "a b",
        "a?b",
        "a#b",
    ],
)
def test_escaping_paths_are_refused(path: str) -> None:
    """Each trick that could leave the base is refused, not repaired."""
    with pytest.raises(ForwardPathRefused):
        target_url(BASE, path, "")


def test_query_with_a_space_is_refused() -> None:
    """A raw space or control in the query is refused."""
    with pytest.raises(ForwardPathRefused):
        target_url(BASE, "x", "a=b c")
