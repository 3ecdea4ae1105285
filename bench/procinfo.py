"""Resident memory of a broker's processes, read from /proc (Linux only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


def rss_bytes(pid: int) -> int | None:
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _children(pid: int) -> list[int]:
    found = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces; the parent pid is the 2nd field after it.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return (_PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass
class BrokerProcesses:
    """A `broker serve` process: alone it serves; with workers it supervises them."""

    supervisor: int
    workers: list[int]

    @classmethod
    def of(cls, pid: int) -> BrokerProcesses:
        workers = [c for c in _children(pid) if "spawn_main" in _cmdline(c)]
        return cls(pid, workers)

    def serving(self) -> list[int]:
        return self.workers or [self.supervisor]

    def worker_rss(self) -> list[int]:
        return [rss for pid in self.serving() if (rss := rss_bytes(pid)) is not None]

    def supervisor_rss(self) -> int | None:
        return rss_bytes(self.supervisor) if self.workers else None


def available() -> bool:
    return (_PROC / "self" / "status").exists()
