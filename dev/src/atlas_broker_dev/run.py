"""`broker dev`: the whole stack on loopback with embedded defaults, for trying the broker.

Starts OpenBao in dev mode, seeds a demo realm and a demo caller, starts the development
IdP, uses Redis at BROKER_REDIS_URL when it answers (else the embedded memory store),
starts the broker and prints a curl line that returns a token. Ctrl-C stops it all.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

import redis

from atlas_broker_client import BrokerClient, BrokerClientError
from atlas_broker_dev.processes import PortInUse, StartupError, ensure_port_free
from atlas_broker_dev.stack import Caller, LocalStack, Servers, start_servers, write_policy

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


def run_dev(*, port: int = 8080, check_only: bool = False, as_json: bool = False) -> int:
    """Exit codes: 0 ok, 1 a server did not start (a port in use included)."""
    if port:
        # Before anything starts: a broker already answering there would pass our checks.
        try:
            ensure_port_free(port)
        except PortInUse:
            _say(
                f"port {port} on 127.0.0.1 is already in use (another `broker dev`?); "
                "stop it or pass --port 0 for a free port"
            )
            return 1
    workdir = Path(tempfile.mkdtemp(prefix="atlas-broker-dev-"))
    servers: Servers | None = None
    stack: LocalStack | None = None
    keep_logs = True
    try:
        servers = start_servers(workdir, redis=False)
        _say(f"OpenBao (dev mode) at {servers.openbao.addr}")
        _say(f"development IdP at {servers.idp.url}")
        caller = Caller(DEMO_CALLER, secrets.token_urlsafe(32), [DEMO_REALM], ["admin"])
        stack = LocalStack(
            log_dir=workdir,
            openbao=servers.openbao,
            idp=servers.idp,
            redis_url=_redis_url(),
            policy_file=write_policy(workdir / "policy.yaml", [caller]),
        )
        stack.add_realm(DEMO_REALM, client_id="atlas-demo")
        _say(f"seeded secret/atlas/realms/{DEMO_REALM} in OpenBao")
        broker = stack.start_broker(port=port or None, BROKER_ENV="dev")
        _say(f"broker at {broker.url} (logs in {workdir})")

        try:
            with BrokerClient(broker.url, api_key=caller.key, timeout=15) as client:
                token = client.token(DEMO_REALM)
        except BrokerClientError as exc:
            _say(f"self-check failed: {exc}")
            return 1
        _say(f"self-check: got a token for realm {DEMO_REALM!r}, expires {token.expires_at}")
        url = f"{broker.url}/v1/realms/{DEMO_REALM}/token"
        if as_json:
            details = {"broker_url": broker.url, "realm": DEMO_REALM, "api_key": caller.key}
            print(json.dumps({**details, "token_url": url}), flush=True)
        else:
            print(f"curl -s -H 'Authorization: Bearer {caller.key}' {url}", flush=True)
        if check_only:
            keep_logs = False  # nothing to look into: the check passed
            return 0
        _say("running; Ctrl-C stops everything")
        _wait_for_interrupt()
        return 0
    except PortInUse as exc:
        _say(f"{exc}; stop what listens there or pass --port 0 for a free port")
        return 1
    except StartupError as exc:
        _say(f"start-up failed: {exc}")
        return 1
    finally:
        if stack is not None:
            stack.close()
        if servers is not None:
            servers.stop()
        if not keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
        _say("stopped")


def _wait_for_interrupt() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
