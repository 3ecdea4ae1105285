"""Run the broker's image with buildah: `podman run` is refused here, `buildah run` works.

`buildah run --isolation chroot` shares the host's network and PID namespace: a server it
starts on 127.0.0.1 answers the tests, and its process shows in the host's /proc with the
uid and gid it really runs as (issue 8).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

import polling
from delivery.image_build import run

# One working container per pytest process; the pid in the name tells a crashed run's apart.
CONTAINER_PREFIX = "atlas-broker-image-test-"


def image_command(name: str) -> list[str]:
    """The image's ENTRYPOINT followed by its CMD: what `docker run IMAGE` would start."""
    config = json.loads(run(["podman", "image", "inspect", name], timeout=60))[0]["Config"]
    return [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]


def _process_table() -> dict[int, tuple[int, int, list[str]]]:
    """pid -> (parent pid, process group, argv) of every process we can see."""
    table: dict[int, tuple[int, int, list[str]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue  # it exited meanwhile
        # Fields after the parenthesised command name: state, ppid, pgrp, ...
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), int(fields[2]), [a for a in argv if a])
    return table


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def remove_stale_containers() -> None:
    """Remove working containers a crashed earlier run left, and stop what still runs in them."""
    names = run(["buildah", "containers", "--format", "{{.ContainerName}}"], timeout=60)
    for name in names.split():
        owner = name.removeprefix(CONTAINER_PREFIX)
        if name == owner or not owner.isdigit() or _pid_alive(int(owner)):
            continue
        for pid, (_, pgid, argv) in _process_table().items():
            # `buildah run … NAME -- …` leads the process group of the server it started.
            if pid == pgid and argv[:2] == ["buildah", "run"] and name in argv:
                _kill_group(pgid, signal.SIGKILL)
        subprocess.run(["buildah", "rm", name], capture_output=True, timeout=120)


class ImageServer:
    """The image's entry point run with `buildah run` in a working container of its own."""

    def __init__(
        self,
        image: str,
        *,
        port: int,
        log_path: Path,
        env: Mapping[str, str],
        mounts: Mapping[Path, str],
    ) -> None:
        self.image = image
        self.name = f"{CONTAINER_PREFIX}{os.getpid()}"
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.env = dict(env)
        self.mounts = dict(mounts)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ImageServer:
        remove_stale_containers()
        subprocess.run(["buildah", "rm", self.name], capture_output=True, timeout=120)
        run(["buildah", "from", "--name", self.name, "--pull=never", self.image], timeout=120)
        argv = ["buildah", "run", "--isolation", "chroot"]
        for key, value in self.env.items():
            argv += ["--env", f"{key}={value}"]
        for source, target in self.mounts.items():
            argv += ["--volume", f"{source}:{target}:ro"]
        argv += [self.name, "--", *image_command(self.image)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # one process group to stop, whatever buildah forks
            )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def server_pid(self) -> int:
        """The process the image's command became: the one leaf of the run's process group."""
        assert self.proc is not None
        group = {
            pid: parent
            for pid, (parent, pgid, _) in _process_table().items()
            if pgid == self.proc.pid
        }
        (leaf,) = set(group) - set(group.values())
        return leaf

    def exec(self, *command: str, timeout: float = 60) -> str:
        """Run another command in the same working container and return its output."""
        return run(
            ["buildah", "run", "--isolation", "chroot", self.name, "--", *command], timeout=timeout
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, *, timeout: float = 15) -> None:
        """Stop the server gracefully (SIGTERM), then anything left in its group; remove the
        working container."""
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.kill(self.server_pid(), signal.SIGTERM)
                except (ValueError, ProcessLookupError):
                    _kill_group(self.proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=timeout)
            _kill_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None
        subprocess.run(["buildah", "rm", self.name], capture_output=True, timeout=120)


def wait_for(check: Callable[[], bool], *, timeout: float, server: ImageServer) -> None:
    """Wait until `check()` holds; fail with the server's log if it exits or times out."""

    def ready() -> bool:
        if not server.running:
            pytest.fail(f"the image's server exited:\n{server.log_tail()}", pytrace=False)
        return check()

    polling.wait_for(
        ready,
        timeout=timeout,
        interval=0.2,
        message=lambda: f"the image's server not ready:\n{server.log_tail()}",
    )
