"""The benchmark's stack, from the development distribution's one stack builder:
OpenBao, Redis, the development IdP and broker processes, with one caller allowed every
realm and brokers running `workers` processes each.

Everything binds 127.0.0.1 on free ports and lives in one temporary directory; the
secrets are made up per run and never printed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from atlas_broker_dev.servers import RedisServer
from atlas_broker_dev.stack import Caller, LocalStack, Realm, Servers, start_servers, write_policy

CLIENT_ID = "atlas-bench"

__all__ = ["CLIENT_ID", "BenchStack", "Realm", "bench_stack"]


class BenchStack(LocalStack):
    """The stack with the benchmark's caller; every realm uses client id `atlas-bench`."""

    def __init__(self, servers: Servers, *, workdir: Path, caller_key: str, workers: int) -> None:
        assert servers.redis is not None
        super().__init__(
            log_dir=workdir,
            openbao=servers.openbao,
            idp=servers.idp,
            redis_url=servers.redis.url,
            policy_file=write_policy(workdir / "policy.yaml", [Caller("bench", caller_key, ["*"])]),
            key_prefix="bench",
        )
        self.workdir = workdir
        self.redis: RedisServer = servers.redis
        self.caller_key = caller_key
        self.workers = workers

    def __repr__(self) -> str:
        return f"BenchStack(workdir={self.workdir!s}, workers={self.workers})"

    def new_realm(
        self,
        prefix: str = "realm",
        *,
        client_id: str | None = None,
        in_vault: bool = True,
        scopes: Sequence[str] | None = None,
        vault_fields: Mapping[str, str] | None = None,
    ) -> Realm:
        return super().new_realm(
            prefix,
            client_id=client_id or CLIENT_ID,
            in_vault=in_vault,
            scopes=scopes,
            vault_fields=vault_fields,
        )

    def broker_env(self, **overrides: str) -> dict[str, str]:
        return super().broker_env(**{"BROKER_WORKERS": str(self.workers), **overrides})


@contextlib.contextmanager
def bench_stack(*, workers: int, keep: bool = False) -> Iterator[BenchStack]:
    """Start OpenBao, Redis and the IdP; yield the stack; stop everything and (unless
    `keep`) delete the working directory with its logs and made-up secrets."""
    workdir = Path(tempfile.mkdtemp(prefix="atlas-bench-"))
    os.chmod(workdir, 0o700)
    servers: Servers | None = None
    stack: BenchStack | None = None
    try:
        servers = start_servers(workdir, redis=True)
        stack = BenchStack(
            servers, workdir=workdir, caller_key=secrets.token_urlsafe(32), workers=workers
        )
        yield stack
    finally:
        if stack is not None:
            stack.close()
        if servers is not None:
            servers.stop()
        if keep:
            print(f"bench: logs kept in {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
