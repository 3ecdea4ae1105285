"""Schemathesis against the live broker: generated requests for every operation, no 5xx,
every response as the spec says."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from atlas_broker_dev.api_standin import start_api_standin
from stack import Stack

# Checks left out, with why:
# - positive_data_acceptance: some schema-valid requests are refused by rules no schema
#   can state (a min_ttl longer than the realm's tokens live, `since` after `until`).
EXCLUDED_CHECKS = "positive_data_acceptance"


# A Vault prefix of its own: the only realm is the one seeded here, not those other tests
# left behind (some deliberately broken).
VAULT_PREFIX = "schemathesis"


def seed_realm(stack: Stack, name: str) -> None:
    """A realm with the name the spec's examples use, so examples reach real tokens."""
    secret = f"{name}-client-secret-for-schemathesis"
    stack.leak_watch.add(secret)
    stack.idp_control("PUT", f"/realms/{name}/clients/atlas-{name}", json={"client_secret": secret})
    stack.openbao.write_realm(
        name, {"client_id": f"atlas-{name}", "client_secret": secret}, prefix=VAULT_PREFIX
    )


def test_generated_requests_get_no_5xx_and_conform(stack: Stack, tmp_path: Path) -> None:
    """Every operation, examples then coverage then fuzzing, as an admin caller."""
    seed_realm(stack, "acme")
    # The forward routes reach an API: the stand-in, which answers whatever path it gets.
    api = start_api_standin(stack.log_dir, idp_url=stack.idp.url)
    stack.processes.append(api.process)
    broker = stack.start_broker(BROKER_VAULT_PREFIX=VAULT_PREFIX, BROKER_API_URL=api.url)
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    report = tmp_path / "schemathesis.txt"  # outside the stack's logs: it may quote requests
    with report.open("w") as out:
        result = subprocess.run(
            [
                st,
                "run",
                f"{broker.url}/openapi.json",
                "--header",
                f"Authorization: Bearer {stack.keys.admin}",
                "--checks",
                "all",
                "--exclude-checks",
                EXCLUDED_CHECKS,
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "25",
                "--workers",
                "2",
                "--seed",
                "20261127",
                "--no-color",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=600,
            check=False,
        )
    text = report.read_text().replace(stack.keys.admin, "[key]")
    assert 0 == result.returncode, text[-6000:]
