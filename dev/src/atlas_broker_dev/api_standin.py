"""An Atlas API stand-in for the forward proxy's and the gateway's tests and benchmarks.
Not for production.

``python -m atlas_broker_dev.api_standin --port N --idp-url URL`` serves on 127.0.0.1:

- any path: 401 unless the request carries ``Authorization: Bearer <JWT>`` signed by a key
  of the development IdP's realm named in its ``iss`` (JWKS fetched from the IdP, only
  from ``--idp-url``); else 200 with a JSON echo of what arrived (method, raw path, query,
  headers, body length and SHA-256, the token's SHA-256 in place of the token), two
  ``Set-Cookie`` headers and the request's ``X-Request-ID``;
- ``…/slow?s=N``: the answer after N seconds;
- ``…/redirect-away``: a 302 to another host (a proxy must not follow it);
- ``/_standin/stats``: how many API requests arrived (controls are not counted);
- ``PUT /_standin/reject?count=N``: the next N requests get 401 whatever their token
  (``-1``: every one), as an API that has stopped accepting a token would.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio
import anyio.to_thread
import httpx
import jwt
import uvicorn

from atlas_broker_dev.processes import ManagedProcess, free_port, http_ok

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass
class StandInState:
    idp_url: str
    requests: int = 0
    reject: int = 0
    keys: dict[str, jwt.PyJWKClient] = field(default_factory=dict)

    def verify(self, token: str) -> bool:
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss", "")
            if not isinstance(issuer, str) or not issuer.startswith(self.idp_url + "/"):
                return False
            client = self.keys.setdefault(
                issuer, jwt.PyJWKClient(f"{issuer}/protocol/openid-connect/certs")
            )
            key = client.get_signing_key_from_jwt(token)
            jwt.decode(token, key.key, algorithms=["RS256"], options={"verify_aud": False})
        except jwt.PyJWTError:
            return False
        return True


def create_standin_app(state: StandInState) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path.startswith("/_standin/"):
            await _control(state, scope, send)
            return
        state.requests += 1
        body = hashlib.sha256()
        length = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            body.update(chunk)
            length += len(chunk)
            if not message.get("more_body"):
                break
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        auth = dict(headers).get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        rejecting = state.reject != 0
        if state.reject > 0:
            state.reject -= 1
        valid = (
            bool(token) and not rejecting and await anyio.to_thread.run_sync(state.verify, token)
        )
        if not valid:
            await _answer(send, 401, {"error": "invalid_token"}, [])
            return
        if path.endswith("/slow"):
            await anyio.sleep(float(parse_qs(scope["query_string"].decode()).get("s", ["5"])[0]))
        if path.endswith("/redirect-away"):
            await _answer(send, 302, {}, [(b"location", b"http://127.0.0.2:9/elsewhere")])
            return
        # The token itself stays here, as a real API keeps it: only its hash is echoed.
        shown = [(k, "Bearer <sha256>" if k == "authorization" else v) for k, v in headers]
        echo = {
            "method": scope["method"],
            "raw_path": scope.get("raw_path", path.encode()).decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"),
            "headers": shown,
            "body_length": length,
            "body_sha256": body.hexdigest(),
            "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
        }
        extra = [(b"set-cookie", b"standin=1; Path=/"), (b"set-cookie", b"second=2; Path=/")]
        request_id = dict(headers).get("x-request-id")
        if request_id:
            extra.append((b"x-request-id", request_id.encode("latin-1")))
        await _answer(send, 200, echo, extra)

    return app


async def _control(state: StandInState, scope: Scope, send: Send) -> None:
    if scope["path"] == "/_standin/reject" and scope["method"] == "PUT":
        query = parse_qs(scope["query_string"].decode())
        state.reject = int(query.get("count", ["-1"])[0])
    await _answer(send, 200, {"requests": state.requests, "reject": state.reject}, [])


async def _answer(
    send: Send, status: int, document: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    payload = json.dumps(document).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


@dataclass
class ApiStandIn:
    process: ManagedProcess
    url: str

    def requests(self) -> int:
        """API requests that reached the stand-in so far (controls not counted)."""
        count: int = httpx.get(f"{self.url}/_standin/stats", timeout=10).json()["requests"]
        return count

    def reject(self, count: int) -> None:
        """The next `count` requests get 401 whatever their token (-1: all, 0: none)."""
        httpx.put(f"{self.url}/_standin/reject", params={"count": count}, timeout=10)


def start_api_standin(log_dir: Path, *, idp_url: str, name: str = "api-standin") -> ApiStandIn:
    """The stand-in on a free loopback port, trusting the development IdP at `idp_url`."""
    port = free_port()
    argv = [sys.executable, "-m", "atlas_broker_dev.api_standin"]
    process = ManagedProcess(
        name, [*argv, "--port", str(port), "--idp-url", idp_url], log_dir=log_dir
    ).start()
    url = f"http://127.0.0.1:{port}"
    process.wait_until(http_ok(f"{url}/_standin/stats"))
    return ApiStandIn(process, url)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m atlas_broker_dev.api_standin")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idp-url", required=True)
    args = parser.parse_args()
    app = create_standin_app(StandInState(idp_url=args.idp_url.rstrip("/")))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
