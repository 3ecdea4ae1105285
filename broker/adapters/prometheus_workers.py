"""One metrics directory per start of a multi-worker broker.

prometheus_client's multiprocess mode keeps each worker's counters and histograms in
files under `PROMETHEUS_MULTIPROC_DIR` and merges them on every scrape, so totals cover
all workers rather than the one that answered. The directory is made fresh for each start
(stale files from an earlier run would add old counts) and removed after. The variable
must be set before the workers import prometheus_client, so this module imports nothing
of it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def shared_metrics_dir(workers: int) -> Iterator[str | None]:
    """With more than one worker, a fresh directory named in the environment the workers
    inherit; with one, nothing (the registry stays in memory)."""
    if workers <= 1:
        yield None
        return
    previous = os.environ.get(MULTIPROCESS_ENV)
    with tempfile.TemporaryDirectory(prefix="atlas-broker-metrics-") as path:
        os.environ[MULTIPROCESS_ENV] = path
        try:
            yield path
        finally:
            if previous is None:
                os.environ.pop(MULTIPROCESS_ENV, None)
            else:
                os.environ[MULTIPROCESS_ENV] = previous
