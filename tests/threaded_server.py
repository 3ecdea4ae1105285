"""An ASGI app served on 127.0.0.1 from a thread of the test process: the stand-ins the
tests talk to over loopback (an Atlas API, a workload issuer, a Kubernetes API, an IdP)."""

from __future__ import annotations

import threading

import uvicorn
from starlette.types import ASGIApp

from atlas_broker_dev.processes import free_port
from polling import wait_for


class ThreadedServer:
    def __init__(self, app: ASGIApp, *, name: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._name = name
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            ws="none",
            http="h11",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=name, daemon=True)

    def start(self) -> ThreadedServer:
        """Start serving; returns once the port listens (or raises if the server died)."""
        server, thread = self._server, self._thread
        thread.start()
        wait_for(
            lambda: server.started or not thread.is_alive(),
            interval=0.01,
            message=f"the {self._name} did not start",
        )
        if not server.started:
            raise RuntimeError(f"the {self._name} exited during start-up")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
