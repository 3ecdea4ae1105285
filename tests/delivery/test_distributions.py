"""The three distributions: the server's wheel holds no development code, the image's
`broker` says so in one line when asked for `broker dev`, and the SDK installs alone in a
clean virtual environment, without the server's dependencies, and gets a real token."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from stack import Stack

REPO_ROOT = Path(__file__).resolve().parents[2]
_PIP_TIMEOUT_SECONDS = 240
# What a service that only wants a token must not be made to install.
_SERVER_ONLY = ("broker", "fastapi", "uvicorn", "hvac", "redis", "starlette", "pydantic")


def _wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_server_wheel_holds_only_the_broker_package(image_wheels: list[Path]) -> None:
    """Every module in the server's wheel is under broker/: no IdP, dev stack or SDK copy."""
    server = image_wheels[0]
    modules = [name for name in _wheel_names(server) if name.endswith(".py")]

    assert [] == [name for name in modules if not name.startswith("broker/")]
    assert [] == [
        name
        for name in modules
        if any(part in name for part in ("devidp", "devstack", "atlas_broker_dev", "idp/"))
    ]
    assert "broker/cli/__init__.py" in modules


def test_installed_broker_says_dev_pieces_are_missing(broker_venv: Path) -> None:
    """`broker dev` from the production install exits 1 with one line naming what is missing."""
    result = subprocess.run(
        [str(broker_venv / "bin" / "broker"), "dev", "--check-only"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(broker_venv)},
    )

    assert (1, "") == (result.returncode, result.stdout)
    assert 1 == len(result.stderr.splitlines()), result.stderr
    assert "development pieces are not installed" in result.stderr


@pytest.fixture(scope="module")
def sdk_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip install ./clients/python` into a new virtual environment, nothing else."""
    venv = tmp_path_factory.mktemp("sdk") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--disable-pip-version-check",
            str(REPO_ROOT / "clients" / "python"),
        ],
        capture_output=True,
        text=True,
        timeout=_PIP_TIMEOUT_SECONDS,
        check=False,
    )
    assert 0 == install.returncode, install.stderr[-3000:]
    return venv


def _in_venv(venv: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(venv), **env},
        cwd=venv,  # not the repository, whose broker/ would be importable from here
    )


def test_sdk_installs_without_the_servers_dependencies(sdk_venv: Path) -> None:
    """After installing the SDK alone, no server package can be imported, but the SDK can."""
    code = (
        "import importlib.util, json, atlas_broker_client\n"
        f"print(json.dumps([m for m in {list(_SERVER_ONLY)!r} "
        "if importlib.util.find_spec(m) is not None]))"
    )
    result = _in_venv(sdk_venv, code)

    assert (0, []) == (result.returncode, json.loads(result.stdout or "null")), result.stderr


def test_sdk_alone_gets_a_token_from_a_running_broker(sdk_venv: Path, stack: Stack) -> None:
    """The SDK from the clean venv fetches a realm's token, and BrokerAuth attaches it."""
    broker = stack.start_broker()
    realm = stack.new_realm("sdk-venv")
    code = (
        "import json, httpx\n"
        "from atlas_broker_client import BrokerAuth, BrokerClient\n"
        "client = BrokerClient.from_env()\n"
        f"token = client.token({realm.name!r})\n"
        f"auth = BrokerAuth.from_env({realm.name!r})\n"
        "request = next(auth.sync_auth_flow(httpx.Request('GET', 'http://atlas.invalid/')))\n"
        "same = request.headers['Authorization'] == 'Bearer ' + token.access_token\n"
        "print(json.dumps({'realm': token.realm, 'same': same}))\n"
    )
    result = _in_venv(sdk_venv, code, BROKER_URL=broker.url, BROKER_API_KEY=stack.keys.everything)

    assert 0 == result.returncode, result.stderr[-3000:]
    assert {"realm": realm.name, "same": True} == json.loads(result.stdout)
    assert stack.keys.everything not in result.stdout + result.stderr
