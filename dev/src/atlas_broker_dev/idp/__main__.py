"""``python -m atlas_broker_dev.idp``: run the development IdP under uvicorn. Not for production.

With ``--port 0`` the OS picks a free port; ``--port-file`` receives the actual port once
the server accepts connections (written to a temporary file, then renamed, so a reader
never sees a partial number). The admin token for ``/_dev`` comes from the config file or
the ``DEVIDP_ADMIN_TOKEN`` environment variable, never from the command line, where any
local user could read it in the process list.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from atlas_broker_dev.idp.app import create_idp_app
from atlas_broker_dev.idp.config import IdPConfig

logger = logging.getLogger("atlas_broker_dev.idp")


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the flags, build the app and serve until SIGINT or SIGTERM."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        config = IdPConfig.from_yaml(args.config) if args.config else IdPConfig()
        config = dataclasses.replace(
            config,
            token_lifetime=args.token_lifetime or config.token_lifetime,
            issuer_base=args.issuer_base or config.issuer_base,
            admin_token=os.environ.get("DEVIDP_ADMIN_TOKEN") or config.admin_token,
        )
        sock = _bind(args.host, args.port)
    except (OSError, ValueError) as exc:
        sys.exit(f"devidp: {exc}")
    if not _is_loopback(args.host):
        logger.warning(
            "development IdP listening beyond loopback on %s: never for production", args.host
        )
    app = create_idp_app(config)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_config=None,  # keep our logging setup
            access_log=False,  # ours omits query strings, see AccessLogMiddleware
            lifespan="off",
            # Hung requests ("hang" fault) must not hold a shutdown for long.
            timeout_graceful_shutdown=3,
        )
    )
    asyncio.run(_serve(server, sock, args.port_file))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m atlas_broker_dev.idp",
        description="Keycloak-compatible development IdP (never for production).",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=8180, help="port; 0 picks a free one")
    parser.add_argument("--config", type=Path, help="YAML file with realms and clients")
    parser.add_argument("--token-lifetime", type=_positive_int, help="seconds (default 3600)")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    parser.add_argument("--issuer-base", help="base URL for 'iss' (default: the request's)")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _bind(host: str, port: int) -> socket.socket:
    """A bound (not yet listening) TCP socket; binding here lets us learn port 0's port."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


async def _serve(server: uvicorn.Server, sock: socket.socket, port_file: Path | None) -> None:
    host, port = sock.getsockname()[:2]
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            await serving  # start-up failed: re-raise its error
            return
        await asyncio.sleep(0.01)
    logger.info("development IdP serving on %s port %d", host, port)
    if port_file is not None:
        _write_atomically(port_file, f"{port}\n")
    await serving


def _write_atomically(path: Path, text: str) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    main()
