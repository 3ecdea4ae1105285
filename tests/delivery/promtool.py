"""`promtool`, Prometheus's rule and query checker: found on PATH, or installed from
Debian's `prometheus` package (which ships it) when missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ALERTS = Path(__file__).resolve().parents[2] / "helm" / "atlas-broker" / "files" / "alerts.yaml"


def ensure_promtool() -> str:
    """The path of `promtool`, installing Debian's `prometheus` package first if need be."""
    found = shutil.which("promtool")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.fail("installing promtool needs root (apt-get install prometheus)", pytrace=False)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # --no-install-recommends: the rule checker, not a Prometheus server with its exporters.
    install = ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"]
    if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode != 0:
        # Stale package lists are the usual cause; refresh them once and try again.
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=300)
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            pytest.fail(f"apt-get install prometheus failed:\n{result.stderr[-3000:]}")
    found = shutil.which("promtool")
    if not found:
        pytest.fail("the prometheus package installed no promtool", pytrace=False)
    return found


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ensure_promtool(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        check=False,
    )
