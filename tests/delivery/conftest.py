"""Shared pieces of the delivery tests: the Dockerfile's build context and an installed broker.

`image_wheels` and `broker_venv` mirror the image's builder stage without a container
engine: they copy the files the Dockerfile copies, build the server's and the SDK's wheels
from them, and install those into a fresh virtual environment made without pip, exactly
as the builder does for /opt/venv. The test modules import nothing from here, they take
fixtures.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"

# Building the wheel fetches the build backend; installing fetches the runtime dependencies.
_PIP_TIMEOUT_SECONDS = 240


def dockerfile_instructions(dockerfile: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments) pairs, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def builder_copy_sources(dockerfile: Path = DOCKERFILE) -> list[str]:
    """Paths that the builder stage copies from the build context."""
    sources: list[str] = []
    in_builder = False
    for keyword, arguments in dockerfile_instructions(dockerfile):
        if keyword == "FROM":
            in_builder = arguments.lower().endswith(" as builder")
        elif keyword == "COPY" and in_builder and "--from=" not in arguments:
            sources.extend(arguments.split()[:-1])
    return sources


def copy_build_context(dest: Path) -> Path:
    """Copy what the builder stage copies from the repository into `dest`; return `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for source in builder_copy_sources():
        origin = REPO_ROOT / source.rstrip("/")
        target = dest / source.rstrip("/")
        if not origin.exists():
            pytest.fail(
                f"the Dockerfile copies {source}, which the repository lacks", pytrace=False
            )
        if origin.is_dir():
            # What .dockerignore leaves out below the copied folders.
            ignored = shutil.ignore_patterns("__pycache__", "*.py[cod]", "*.egg-info", "tests")
            shutil.copytree(origin, target, ignore=ignored)
        else:
            shutil.copy2(origin, target)
    return dest


def _run(command: list[str], *, cwd: Path | None = None) -> None:
    result = subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=_PIP_TIMEOUT_SECONDS,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}",
            pytrace=False,
        )


def build_wheels(context: Path, wheel_dir: Path) -> list[Path]:
    """Build the server's and the SDK's wheels from `context` into `wheel_dir`, as the
    image's builder does; return their paths, the server's first."""
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--wheel-dir",
            str(wheel_dir),
            ".",
            "./clients/python",
        ],
        cwd=context,
    )
    (server,) = wheel_dir.glob("atlas_token_broker-*.whl")
    (sdk,) = wheel_dir.glob("atlas_broker_client-*.whl")
    return [server, sdk]


def install_in_fresh_venv(wheels: list[Path], venv_dir: Path, lock: Path) -> Path:
    """Install the locked dependencies (hash-checked) and `wheels` into a new venv without
    pip, as the builder does; return the venv."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv_dir)])
    pip = [sys.executable, "-m", "pip", "--python", str(venv_dir / "bin" / "python"), "install"]
    _run([*pip, "--require-hashes", "--no-deps", "-r", str(lock)])
    _run([*pip, "--no-deps", *map(str, wheels)])
    return venv_dir


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's top directory, found from this file's location."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def dockerfile() -> list[tuple[str, str]]:
    """The repository's Dockerfile as (INSTRUCTION, arguments) pairs."""
    return dockerfile_instructions()


@pytest.fixture(scope="session")
def builder_sources() -> list[str]:
    """Paths the Dockerfile's builder stage copies from the build context."""
    return builder_copy_sources()


@pytest.fixture(scope="session")
def image_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files the Dockerfile's builder copies, in a folder of their own."""
    return copy_build_context(tmp_path_factory.mktemp("image-context") / "context")


@pytest.fixture(scope="session")
def image_wheels(tmp_path_factory: pytest.TempPathFactory, image_context: Path) -> list[Path]:
    """The server's and the SDK's wheels, built from the image's build context."""
    return build_wheels(image_context, tmp_path_factory.mktemp("image-wheels"))


@pytest.fixture(scope="session")
def broker_venv(
    tmp_path_factory: pytest.TempPathFactory, image_context: Path, image_wheels: list[Path]
) -> Path:
    """A virtual environment holding the broker installed from its wheels, as in the image."""
    venv = tmp_path_factory.mktemp("image-build") / "venv"
    return install_in_fresh_venv(image_wheels, venv, image_context / "requirements.lock")
