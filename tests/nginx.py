"""A real nginx for the gateway tests: Debian's `nginx-light` (installed when missing),
run in the foreground on loopback with the configuration `docs/gateway.md` documents."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from atlas_broker_dev.processes import ManagedProcess, free_port, tcp_open

GATEWAY_DOC = Path(__file__).resolve().parents[1] / "docs" / "gateway.md"
_LOCK = Path(tempfile.gettempdir()) / "atlas-broker-nginx.lock"


def ensure_nginx() -> str:
    """The path of `nginx`, installing Debian's `nginx-light` first if need be."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.fail("installing nginx needs root (apt-get install nginx-light)", pytrace=False)
    # Test workers run in parallel: one installs while the others wait, then find it.
    with _LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")):
            # RUNLEVEL=1: the package's scripts must not start a system nginx on port 80.
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "RUNLEVEL": "1"}
            apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600"]
            subprocess.run([*apt, "update"], env=env, capture_output=True, timeout=300)
            result = subprocess.run(
                [*apt, "install", "-y", "nginx-light"],
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            if result.returncode != 0:
                pytest.fail(f"apt-get install nginx-light failed:\n{result.stderr[-3000:]}")
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if not found:
        pytest.fail("the nginx-light package installed no nginx", pytrace=False)
    return found


def documented_config(**values: str) -> str:
    """The nginx configuration of docs/gateway.md (its one `nginx` block) with its
    `${NAME}` placeholders filled, as `envsubst` with a list of names would (nginx's own
    `$variables` stay)."""
    blocks = re.findall(r"```nginx\n(.*?)```", GATEWAY_DOC.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1, "docs/gateway.md must hold exactly one nginx block"
    return re.sub(r"\$\{([A-Z_]+)\}", lambda m: values[m.group(1)], blocks[0])


def start_nginx(
    log_dir: Path, *, broker_host: str, realm: str, api_url: str
) -> tuple[ManagedProcess, str]:
    """nginx with the documented gateway configuration on a free loopback port; returns
    the process and its base URL."""
    binary = ensure_nginx()
    root = log_dir / f"nginx-{realm}"
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    site = documented_config(
        LISTEN=f"127.0.0.1:{port}", BROKER_HOST=broker_host, REALM=realm, ATLAS_API=api_url
    )
    (root / "gateway.conf").write_text(site)
    # One process, no user switch, every file under `root`: nothing of the system's nginx.
    (root / "nginx.conf").write_text(
        f"""daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    include {root}/gateway.conf;
}}
"""
    )
    process = ManagedProcess(
        "nginx",
        [binary, "-p", str(root), "-e", str(root / "error.log"), "-c", str(root / "nginx.conf")],
        log_dir=log_dir,
    ).start()
    process.wait_until(tcp_open(port))
    return process, f"http://127.0.0.1:{port}"
