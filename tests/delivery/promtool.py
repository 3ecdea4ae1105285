"""`promtool`, Prometheus's rule and query checker: found on PATH, or installed from
Debian's `prometheus` package (which ships it) when missing."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

_LOCK = Path(tempfile.gettempdir()) / "atlas-broker-promtool.lock"
ALERTS = Path(__file__).resolve().parents[2] / "helm" / "atlas-broker" / "files" / "alerts.yaml"


def ensure_promtool() -> str:
    """The path of `promtool`, installing Debian's `prometheus` package first if need be."""
    found = shutil.which("promtool")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.fail("installing promtool needs root (apt-get install prometheus)", pytrace=False)
    # Test workers run in parallel: one installs while the others wait, then find it.
    with _LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not shutil.which("promtool"):
            _apt_install("prometheus")
    found = shutil.which("promtool")
    if not found:
        pytest.fail("the prometheus package installed no promtool", pytrace=False)
    return found


def _apt_install(package: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Wait for dpkg's lock rather than fail while another installation holds it;
    # --no-install-recommends: the rule checker, not a server with its exporters.
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600"]
    install = [*apt, "install", "-y", "--no-install-recommends", package]
    if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
        # Stale package lists are the usual cause; refresh them once and try again.
        subprocess.run([*apt, "update"], env=env, capture_output=True, timeout=300)
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            pytest.fail(f"apt-get install {package} failed:\n{result.stderr[-3000:]}")


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ensure_promtool(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        check=False,
    )
