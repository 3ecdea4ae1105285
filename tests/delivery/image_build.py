"""Build the broker's image with podman on a machine without Docker or a registry.

What works on these machines (issue 8): Debian's podman, buildah and debootstrap;
`podman build --isolation chroot`; `buildah from` + `buildah run --isolation chroot` to
run a process from the image as the image's user on the host network (`podman run` is
refused its cgroup and rlimit set-up here). No registry can be pulled from, so the base
is a Debian bookworm made with debootstrap and imported as a local image; pip inside the
build trusts this machine's CA bundle, passed as the Dockerfile's optional `pip-ca`
build secret.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("podman", "buildah", "debootstrap")
FALLBACK_MIRROR = "http://deb.debian.org/debian"
BOOTSTRAP_PACKAGES = "python3,python3-venv,ca-certificates"
# What slim images leave out too: package caches and lists, documentation, translations.
_TRIMMED = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/locale",
)
# Root's PATH may lack the sbin directories where Debian puts debootstrap.
_TOOL_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def run(command: Sequence[str], *, timeout: float, log: Path | None = None) -> str:
    """Run `command`; return its output, or fail the test with the output's tail."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    output = result.stdout + result.stderr
    if log is not None:
        log.write_text(output)
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(command[:3])} … exited {result.returncode}:\n{output[-3000:]}",
            pytrace=False,
        )
    return result.stdout


def ensure_tools() -> None:
    """Install podman, buildah and debootstrap from Debian when any is missing from PATH."""
    if all(shutil.which(tool, path=_TOOL_PATH) for tool in TOOLS):
        return
    if os.geteuid() != 0:
        pytest.fail(f"installing {', '.join(TOOLS)} needs root (apt-get)", pytrace=False)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", *TOOLS]
    if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode != 0:
        # Stale package lists are the usual cause; refresh them once and try again.
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=300)
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            pytest.fail(f"apt-get install failed:\n{result.stderr[-3000:]}", pytrace=False)


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The first Debian mirror that apt is configured with for bookworm."""
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":  # deb822 stanzas, separated by blank lines
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.+)$", stanza, re.MULTILINE))
                if (
                    "bookworm" in fields.get("Suites", "").split()
                    and "deb" in fields.get("Types", "").split()
                ):
                    return fields["URIs"].split()[0]
        elif path.suffix == ".list" or path.name == "sources.list":
            for line in text.splitlines():
                match = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s", line)
                if match:
                    return match.group(1)
    return FALLBACK_MIRROR


def image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name], timeout=60).returncode == 0


def ensure_base_image(name: str, workdir: Path) -> None:
    """A Debian bookworm base with python3 and python3-venv, built once and then reused."""
    if image_exists(name):
        return
    rootfs = workdir / "rootfs"
    run(
        [
            shutil.which("debootstrap", path=_TOOL_PATH) or "debootstrap",
            "--variant=minbase",
            f"--include={BOOTSTRAP_PACKAGES}",
            "bookworm",
            str(rootfs),
            debian_mirror(),
        ],
        timeout=900,
        log=workdir / "debootstrap.out",
    )
    for trimmed in _TRIMMED:
        shutil.rmtree(rootfs / trimmed, ignore_errors=True)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    assert tar.stdout is not None
    imported = subprocess.run(
        ["podman", "import", "-", name],
        stdin=tar.stdout,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    tar.stdout.close()
    tar.wait(timeout=60)
    shutil.rmtree(rootfs, ignore_errors=True)
    if imported.returncode != 0:
        pytest.fail(f"podman import failed:\n{imported.stderr[-3000:]}", pytrace=False)


def pip_ca_bundle() -> Path | None:
    """The CA bundle `pip config list` names as `cert`, if there is one."""
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(".cert"):
            bundle = Path(value.strip().strip("'\""))
            if bundle.is_file():
                return bundle
    return None


def image_id(name: str) -> str | None:
    result = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout.strip() or None


def build_image(name: str, *, base_image: str, ca_bundle: Path | None, log: Path) -> None:
    """Build the repository's Dockerfile as `name`; drop the image it replaces."""
    previous = image_id(name)
    secret = ["--secret", f"id=pip-ca,src={ca_bundle}"] if ca_bundle else []
    run(
        [
            "podman",
            "build",
            "--isolation",
            "chroot",
            "--force-rm",
            "--build-arg",
            f"BASE_IMAGE={base_image}",
            *secret,
            "--tag",
            name,
            "--file",
            str(REPO_ROOT / "Dockerfile"),
            str(REPO_ROOT),
        ],
        timeout=900,
        log=log,
    )
    if previous and previous != image_id(name):
        # Keeps one tagged image per machine; failure (still in use) only costs disk.
        subprocess.run(["podman", "rmi", previous], capture_output=True, timeout=120)


def image_size(name: str) -> int:
    return int(run(["podman", "image", "inspect", "--format", "{{.Size}}", name], timeout=60))
