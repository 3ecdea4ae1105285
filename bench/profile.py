"""Where a broker worker spends its time under load: py-spy samples, read as the top
functions by self time (the frame running) and inclusive time (anywhere on the stack)."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections import Counter
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def find_py_spy(explicit: str | None = None) -> str | None:
    """`explicit` if given (and there), else py-spy on PATH or beside this interpreter."""
    if explicit:
        return explicit if Path(explicit).is_file() else None
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.is_file() else None)


# The root frame of every thread but the main one (where the event loop runs).
_THREAD_ROOTS = frozenset({"Thread._bootstrap (threading.py)", "_bootstrap (threading.py)"})


@dataclass
class TopFunctions:
    samples: int  # of the main thread, the event loop's
    self_share: dict[str, float] = field(default_factory=dict)  # highest first
    inclusive_share: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # why there are no samples
    other_threads: int = 0  # samples of other threads (thread pools, log flushing), left out


def _frames(line: str) -> tuple[list[str], int] | None:
    stack, _, count = line.rstrip().rpartition(" ")
    if not stack or not count.isdigit():
        return None
    return [frame.strip() for frame in stack.split(";") if frame.strip()], int(count)


def top_functions(raw_lines: Iterable[str], *, limit: int = 15) -> TopFunctions:
    """Shares of the main thread's samples in py-spy's raw format (`root;…;leaf count`):
    self counts a sample for its leaf frame, inclusive once for each distinct frame on it
    (frames on every stack left out).
    Other threads mostly wait (py-spy cannot always tell), so they are only counted."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = other = 0
    for line in raw_lines:
        parsed = _frames(line)
        if parsed is None or not parsed[0]:
            continue
        frames, count = parsed
        if frames[0] in _THREAD_ROOTS:
            other += count
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            anywhere[frame] += count
    if total == 0:
        return TopFunctions(0, error="no samples of the main thread", other_threads=other)
    # Frames on every stack (the entry point down to the event loop) say nothing.
    below_root = Counter({name: n for name, n in anywhere.items() if n < total})
    return TopFunctions(
        total,
        {name: n / total for name, n in own.most_common(limit)},
        {name: n / total for name, n in below_root.most_common(limit)},
        other_threads=other,
    )


async def record_during(
    py_spy: str, pid: int, work: Awaitable[T], *, seconds: int, output: Path, rate: int = 200
) -> tuple[T, TopFunctions]:
    """Sample process `pid` with py-spy for `seconds` while `work` runs (it should run as
    long); function-level frames (no line numbers), idle stacks left out."""
    argv = [py_spy, "record", "-p", str(pid), "-f", "raw", "-o", str(output)]
    argv += ["-d", str(seconds), "-r", str(rate), "--nolineno"]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    result = await work
    _, err = await process.communicate()
    return result, _read_raw(output, process.returncode, err.decode(errors="replace"))


def _read_raw(output: Path, returncode: int | None, stderr: str) -> TopFunctions:
    if returncode != 0 or not output.exists():
        reason = next((line for line in stderr.splitlines() if line.strip()), "")
        return TopFunctions(0, error=f"py-spy failed ({returncode}): {reason}")
    top = top_functions(output.read_text(errors="replace").splitlines())
    output.unlink(missing_ok=True)
    return top
