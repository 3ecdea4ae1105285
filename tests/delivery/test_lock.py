"""requirements.lock: the server's runtime dependencies, every one pinned with hashes, in
step with pyproject.toml, and used by the image build and scripts/bootstrap."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCK = REPO_ROOT / "requirements.lock"
_PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)")
_DIRECT = "atlas-token-broker (pyproject.toml)"
# Distributions of this repository: the image builds their wheels beside the server's, so
# no index (and no lock) has them.
_BUILT_HERE = {"atlas-broker-client"}


def locked() -> dict[str, tuple[str, str]]:
    """Each locked package: (version, its whole entry), by normalised name."""
    entries: dict[str, tuple[str, str]] = {}
    for entry in re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text()):
        match = _PIN.match(entry)
        if match:
            entries[canonicalize_name(match[1])] = (match[2], entry)
    return entries


def declared() -> dict[str, str]:
    """The runtime dependencies pyproject.toml pins: version by normalised name."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in project["dependencies"]:
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) in _BUILT_HERE:
            continue
        (specifier,) = requirement.specifier
        pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def test_every_dependency_of_pyproject_is_locked_at_its_pinned_version() -> None:
    """Each `name==version` of [project] dependencies is in the lock at that version."""
    versions = {name: version for name, (version, _) in locked().items()}
    assert {} == {
        name: (pin, versions.get(name))
        for name, pin in declared().items()
        if versions.get(name) != pin
    }


def test_the_lock_holds_no_direct_dependency_that_pyproject_dropped() -> None:
    """Every package the lock marks as required by the project is still in pyproject.toml."""
    direct = {name for name, (_, entry) in locked().items() if _DIRECT in entry}
    assert set() == direct - set(declared())


def test_every_locked_package_has_a_hash() -> None:
    """pip's hash-checking mode needs a hash for every package."""
    assert [] == [name for name, (_, entry) in locked().items() if "--hash=sha256:" not in entry]


def test_image_and_bootstrap_install_from_the_lock_with_hashes() -> None:
    """The Dockerfile and scripts/bootstrap install requirements.lock in hash-checking mode."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    bootstrap = (REPO_ROOT / "scripts" / "bootstrap").read_text()
    assert "--require-hashes --no-deps -r requirements.lock" in dockerfile
    assert re.search(r"--require-hashes \\\s+-r requirements.lock", bootstrap)
