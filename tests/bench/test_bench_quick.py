"""The benchmark keeps working: its quick mode runs end to end (speed is never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("## Hot path (python)", "## Stampede", "## Refresh ahead", "## Footprint")


def test_quick_bench_completes_and_writes_its_report(tmp_path: Path) -> None:
    """`python -m bench.run --quick` exits 0 and writes a report with every scenario."""
    output = tmp_path / "BENCHMARKS.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert 0 == result.returncode, result.stderr[-3000:]
    report = output.read_text()
    assert [] == [section for section in SECTIONS if section not in report]
