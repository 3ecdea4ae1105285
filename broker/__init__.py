"""Atlas Token Broker: one holder of the Atlas client secrets, handing ready tokens to callers."""

import sys

__version__ = "0.1.0"

# Optional modules that libraries import merely because they happen to be installed, and
# that a broker process never uses (about 5 MiB of resident memory per process together):
# - httpx's command-line client (rich, click, pygments), ~3 MiB;
# - redis-py's OpenTelemetry metrics support (the OpenTelemetry metrics SDK), ~1.5 MiB: the
#   broker's metrics are Prometheus, and its OpenTelemetry tracing needs no metrics SDK;
# - uvicorn's watchfiles code reloader, ~0.8 MiB: the broker never reloads code.
# A broker process imports this package before httpx and redis (and, serving in one
# process, before uvicorn); marking the modules absent here keeps them out, and each
# library takes its documented fallback.
for _unused in (
    "httpx._main",
    "opentelemetry.sdk.metrics",
    "uvicorn.supervisors.watchfilesreload",
):
    sys.modules.setdefault(_unused, None)  # type: ignore[arg-type]  # None: "not importable"
del _unused
