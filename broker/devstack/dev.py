"""`broker dev`: the whole stack on loopback with embedded defaults, for trying the broker.

Starts OpenBao in dev mode, seeds a demo realm and a demo caller, starts the development
IdP, uses Redis at BROKER_REDIS_URL when it answers (else the embedded memory store),
starts the broker and prints a curl line that returns a token. Ctrl-C stops it all.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sys
import tempfile
import threading
from pathlib import Path

import httpx
import redis
import yaml

from broker.core.policy import hash_key
from broker.devstack.processes import ManagedProcess, StartupError, free_port
from broker.devstack.servers import start_broker, start_dev_idp, start_openbao

DEMO_REALM = "demo"
DEMO_CALLER = "demo-caller"


def _say(message: str) -> None:
    print(f"broker dev: {message}", file=sys.stderr, flush=True)


def _redis_url() -> str:
    url = os.environ.get("BROKER_REDIS_URL", "redis://localhost:6379/0")
    if url.startswith("memory://"):
        return url
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1) as client:
            client.ping()
    except (redis.RedisError, OSError, ValueError):
        _say(f"no Redis answers at {url}: using the embedded memory:// store")
        return "memory://"
    _say(f"using Redis at {url}")
    return url


def run_dev(*, port: int = 8080, check_only: bool = False) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="atlas-broker-dev-"))
    started: list[ManagedProcess] = []
    try:
        bao = start_openbao(workdir, root_token=secrets.token_urlsafe(24))
        started.append(bao.process)
        _say(f"OpenBao (dev mode) at {bao.addr}")

        client_secret = secrets.token_urlsafe(32)
        idp_config = workdir / "idp.yaml"
        idp_config.write_text(
            yaml.safe_dump(
                {
                    "realms": {
                        DEMO_REALM: {
                            "clients": [{"client_id": "atlas-demo", "client_secret": client_secret}]
                        }
                    }
                }
            )
        )
        idp = start_dev_idp(workdir, config=idp_config)
        started.append(idp.process)
        _say(f"development IdP at {idp.url}")
        bao.write_realm(DEMO_REALM, {"client_id": "atlas-demo", "client_secret": client_secret})
        _say(f"seeded secret/atlas/realms/{DEMO_REALM} in OpenBao")

        caller_key = secrets.token_urlsafe(32)
        policy = workdir / "policy.yaml"
        policy.write_text(
            yaml.safe_dump(
                {
                    "callers": [
                        {
                            "name": DEMO_CALLER,
                            "api_key_sha256": hash_key(caller_key),
                            "realms": [DEMO_REALM],
                            "roles": ["admin"],
                        }
                    ]
                }
            )
        )
        broker = start_broker(
            workdir,
            port=port or free_port(),
            env={
                "BROKER_ENV": "dev",
                "BROKER_VAULT_ADDR": bao.addr,
                "BROKER_VAULT_TOKEN": bao.root_token,
                "BROKER_IDP_URL": idp.url,
                "BROKER_REDIS_URL": _redis_url(),
                "BROKER_POLICY_FILE": str(policy),
            },
        )
        started.append(broker.process)
        _say(f"broker at {broker.url} (logs in {workdir})")

        url = f"{broker.url}/v1/realms/{DEMO_REALM}/token"
        response = httpx.get(url, headers={"Authorization": f"Bearer {caller_key}"}, timeout=15)
        if response.status_code != 200:
            _say(f"self-check failed: HTTP {response.status_code} {response.text[:300]}")
            return 1
        expires_at = response.json()["expires_at"]
        _say(f"self-check: got a token for realm {DEMO_REALM!r}, expires {expires_at}")
        print(f"curl -s -H 'Authorization: Bearer {caller_key}' {url}", flush=True)
        if check_only:
            return 0
        _say("running; Ctrl-C stops everything")
        _wait_for_interrupt()
        return 0
    except StartupError as exc:
        _say(f"start-up failed: {exc}")
        return 1
    finally:
        for process in reversed(started):
            with contextlib.suppress(Exception):
                process.stop()
        _say("stopped")


def _wait_for_interrupt() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
