"""A serving broker process leaves out the optional modules its libraries would import
merely because they are installed (resident memory per worker)."""

from __future__ import annotations

import json
import subprocess
import sys

_SERVER_IMPORTS = "import broker.cli, broker.http.server, broker.http.app"


def _loaded_after(statement: str, names: list[str]) -> dict[str, bool]:
    probe = (
        f"import json, sys; {statement}; "
        f"print(json.dumps({{n: sys.modules.get(n) is not None for n in {names!r}}}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    loaded: dict[str, bool] = json.loads(done.stdout)
    return loaded


def test_the_server_imports_no_command_line_client_reloader_or_metrics_sdk() -> None:
    unused = ["httpx._main", "rich", "watchfiles", "opentelemetry.sdk.metrics"]
    assert _loaded_after(_SERVER_IMPORTS, unused) == dict.fromkeys(unused, False)


def test_the_libraries_still_load_what_the_server_uses() -> None:
    used = ["httpx", "redis.asyncio", "uvicorn", "opentelemetry.sdk.trace"]
    statement = f"{_SERVER_IMPORTS}; import opentelemetry.sdk.trace"
    assert _loaded_after(statement, used) == dict.fromkeys(used, True)
