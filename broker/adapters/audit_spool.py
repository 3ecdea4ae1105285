"""`Spool`: the local append-only file that holds audit events Redis did not take.

One file per writer (a broker process), `{dir}/{prefix}.{writer}.spool`, holding lines
`<seq> <event JSON>`: the writer's sequence number and the event exactly as the stream
will hold it. Appends are fsync'd per batch, and an append that fails half-way is cut
back, so the file only ever holds whole lines. The writer keeps an exclusive `flock` on
its file while it lives; a file whose lock can be taken belongs to a writer that died,
and the next process with the same prefix adopts it and replays it.

A spool has a size cap (BROKER_AUDIT_SPOOL_MAX_BYTES): an append that would pass it
raises `SpoolFull` and writes nothing, like a full disk; the file empties once replayed.

Every method blocks (file I/O, fsync): the audit writer calls them in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

_READ_CHUNK = 1 << 20

Record = tuple[int, str]


class SpoolFull(OSError):
    """The append would take the spool past its size cap; nothing was written."""

    def __init__(self) -> None:
        super().__init__(errno.ENOSPC, "audit spool full")


class Spool:
    def __init__(self, path: Path, writer: str, fd: int) -> None:
        self.path = path
        self.writer = writer
        self._fd = fd
        self.replayed = 0  # bytes already in the stream; kept in memory only (see audit_redis)

    # -- opening ----------------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path, *, prefix: str, writer: str) -> Spool:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = directory / f"{prefix}.{writer}.spool"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise
        return cls(path, writer, fd)

    @classmethod
    def adopt_orphans(cls, directory: Path, *, prefix: str, own: str) -> list[Spool]:
        """Spools of dead writers with this prefix, oldest first, locked for replay."""
        if not directory.is_dir():
            return []
        candidates = sorted(directory.glob(f"{prefix}.*.spool"), key=_mtime)
        adopted = []
        for path in candidates:
            writer = path.name[len(prefix) + 1 : -len(".spool")]
            if writer == own or "." in writer:
                continue
            try:
                fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # a live writer holds it
                os.close(fd)
                continue
            spool = cls(path, writer, fd)
            spool.repair_tail()
            if spool.size() == 0:
                spool.remove()
                continue
            adopted.append(spool)
        return adopted

    # -- writing ----------------------------------------------------------------------

    def append(self, records: Sequence[Record], *, max_bytes: int | None = None) -> None:
        """Append whole lines and fsync; on failure nothing of this batch stays. Raises
        SpoolFull when the file would grow past `max_bytes`."""
        data = "".join(f"{seq} {payload}\n" for seq, payload in records).encode()
        start = self.size()
        if max_bytes is not None and start + len(data) > max_bytes:
            raise SpoolFull
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            raise

    def repair_tail(self) -> None:
        """Cut a torn last line (a crash mid-append; it was never acknowledged)."""
        size = self.size()
        if size == 0 or os.pread(self._fd, 1, size - 1) == b"\n":
            return
        keep = 0
        offset = max(0, size - _READ_CHUNK)
        while True:
            chunk = os.pread(self._fd, min(_READ_CHUNK, size - offset), offset)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = offset + newline + 1
                break
            if offset == 0:
                break
            offset = max(0, offset - _READ_CHUNK)
        os.ftruncate(self._fd, keep)
        os.fsync(self._fd)
        log.warning("cut a torn line off an audit spool", extra={"spool": self.path.name})

    # -- replaying --------------------------------------------------------------------

    def size(self) -> int:
        if self._fd < 0:
            return 0  # removed or closed: a metric may still read it once more
        return os.fstat(self._fd).st_size

    def pending(self) -> bool:
        return self.size() > self.replayed

    def read(self, max_records: int) -> tuple[list[Record], int]:
        """Up to `max_records` whole records after `replayed`, and the offset after them."""
        chunk = os.pread(self._fd, _READ_CHUNK, self.replayed)
        records: list[Record] = []
        consumed = 0
        while len(records) < max_records:
            newline = chunk.find(b"\n", consumed)
            if newline < 0:
                break
            line = chunk[consumed:newline]
            consumed = newline + 1
            seq, _, payload = line.partition(b" ")
            try:
                if not payload:
                    raise ValueError("no event")
                records.append((int(seq), payload.decode()))
            except ValueError:
                log.error("skipped a malformed audit spool line", extra={"spool": self.path.name})
        return records, self.replayed + consumed

    def reset(self) -> None:
        """Empty the file once everything in it is in the stream."""
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)
        self.replayed = 0

    # -- closing ----------------------------------------------------------------------

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # releases the flock
            self._fd = -1


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
