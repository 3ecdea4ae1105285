"""`Forwarder`: a caller's request sent on to the Atlas API with the realm's token, so the
caller never holds the token (the forward proxy, `/v1/realms/{realm}/forward/{path}`).

One call:

1. the caller is authorized and a token issued exactly as on the token route (401/403
   come before anything else, and are audited there);
2. the target is `{api_url}/{path}?{query}`, `api_url` being the realm's own (from its
   secret, at an allowed origin) or `BROKER_API_URL`; a path that could leave it is
   refused (`broker.core.forward_paths`) with nothing sent;
3. headers pass except hop-by-hop ones and the caller's own credentials; the request id
   goes along; the body streams, unless it is small enough to send twice (≤ 1 MiB);
4. an API 401 to the token sent gets one fresh token and one retry, when the body can be
   replayed; a token is forced anew at most once per realm per `refresh_interval`,
   a window shared by the replicas through the store, so an API that keeps answering
   401 cannot make the broker hammer the IdP;
5. every call is audited (`api.forwarded`): caller, realm, method, path without query,
   status, token fingerprint, time to the API's answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from broker.core import forward_paths
from broker.core.audit import AuditEvent
from broker.core.broker import TokenBroker
from broker.core.context import RequestContext
from broker.core.errors import (
    ApiNotConfigured,
    BodyTooLarge,
    BrokerError,
    SecretSourceUnavailable,
    StoreUnavailable,
)
from broker.core.forward_headers import forwarded_headers, returned_headers
from broker.core.models import AccessToken, ApiRequest, ApiResponse
from broker.core.origins import check_realm_url
from broker.core.policy import Caller
from broker.core.ports import ApiClient, AuditSink, Clock, SecretSource, TokenStore

REPLAY_LIMIT = 1 << 20  # bodies up to this size are buffered, so a 401 can be retried
MIN_TTL = 30.0  # a token forwarded must outlive a slow API call
_API_URL_TTL = 30.0  # seconds a realm's api_url read from the secret source is reused
_PATH_IN_AUDIT = 512


@dataclass(frozen=True, slots=True)
class ForwardLimits:
    max_body: int = 10 << 20
    refresh_interval: float = 30.0


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    """The caller's request as the HTTP layer hands it over (path still percent-encoded)."""

    method: str
    raw_path: str
    raw_query: str
    headers: list[tuple[str, str]]
    body: AsyncIterator[bytes] | None
    content_length: int | None


class Forwarder:
    def __init__(
        self,
        *,
        broker: TokenBroker,
        secrets: SecretSource,
        store: TokenStore,
        api: ApiClient,
        audit: AuditSink,
        clock: Clock,
        api_url: str | None,
        allowed_origins: frozenset[str],
        limits: ForwardLimits | None = None,
    ) -> None:
        self._broker = broker
        self._secrets = secrets
        self._store = store
        self._api = api
        self._audit = audit
        self._clock = clock
        self._api_url = api_url
        self._allowed = allowed_origins
        self._limits = limits or ForwardLimits()
        self._api_urls: dict[str, tuple[str | None, float]] = {}
        self._local_windows: dict[str, float] = {}  # while the store is out of reach

    async def forward(
        self, caller: Caller, realm: str, incoming: IncomingRequest, *, ctx: RequestContext
    ) -> ApiResponse:
        """The API's answer to `incoming`, sent with the realm's token (body not yet read)."""
        issued = await self._broker.issue(caller, realm, min_ttl=MIN_TTL, ctx=ctx)
        url = forward_paths.target_url(
            await self._base_url(realm), incoming.raw_path, incoming.raw_query
        )
        limit = self._limits.max_body
        if incoming.content_length is not None and incoming.content_length > limit:
            raise BodyTooLarge(f"bodies up to {limit} bytes are forwarded")
        body = await _prepare_body(incoming, limit)
        headers = forwarded_headers(incoming.headers, ctx.request_id)
        if incoming.content_length is not None and not isinstance(body, bytes):
            headers.append(("content-length", str(incoming.content_length)))
        token = issued.token
        started = self._clock.monotonic()
        try:
            response = await self._send(incoming.method, url, headers, body, token)
            if response.status == 401 and (body is None or isinstance(body, bytes)):
                try:
                    fresh = await self._fresh_token(caller, realm, token, ctx)
                except BaseException:
                    await response.aclose()
                    raise
                if fresh is not None:
                    await response.aclose()
                    token = fresh
                    response = await self._send(incoming.method, url, headers, body, token)
        except BrokerError as exc:
            await self._record(caller, realm, incoming, token, ctx, started, error=exc)
            raise
        try:
            await self._record(caller, realm, incoming, token, ctx, started, status=response.status)
        except BaseException:
            await response.aclose()  # the connection goes back before the error leaves
            raise
        response.headers = returned_headers(response.headers)
        return response

    async def _send(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None,
        token: AccessToken,
    ) -> ApiResponse:
        sent = [*headers, ("authorization", f"Bearer {token.value}")]
        return await self._api.send(ApiRequest(method, url, sent, body))

    async def _base_url(self, realm: str) -> str:
        """The realm's API base: its own `api_url` (allowed origins only) or the default."""
        cached = self._api_urls.get(realm)
        if cached is None or self._clock.monotonic() - cached[1] > _API_URL_TTL:
            try:
                cached = await self._read_api_url(realm)
            except SecretSourceUnavailable:
                if cached is None:
                    raise  # Vault down and nothing known: no guess at where to send
        base = cached[0] or self._api_url
        if base is None:
            raise ApiNotConfigured(f"realm {realm!r} has no api_url and BROKER_API_URL is not set")
        return base

    async def _read_api_url(self, realm: str) -> tuple[str | None, float]:
        own = (await self._secrets.credentials(realm)).api_url
        if own is not None:
            check_realm_url(realm, own, self._allowed)
        read = (own.rstrip("/") if own else None, self._clock.monotonic())
        self._api_urls[realm] = read
        return read

    async def _fresh_token(
        self, caller: Caller, realm: str, rejected: AccessToken, ctx: RequestContext
    ) -> AccessToken | None:
        """A token other than `rejected` for the retry, or None when none may be had now."""
        issued = await self._broker.issue(caller, realm, min_ttl=MIN_TTL, ctx=ctx)
        if issued.token.value != rejected.value:
            return issued.token  # replaced meanwhile (a refresh, another replica's 401)
        if not await self._claim_window(realm):
            return None
        await self._broker.evict(realm, actor=caller.name, ctx=ctx)
        issued = await self._broker.issue(caller, realm, min_ttl=MIN_TTL, ctx=ctx)
        return issued.token if issued.token.value != rejected.value else None

    async def _claim_window(self, realm: str) -> bool:
        interval = self._limits.refresh_interval
        now = self._clock.monotonic()
        try:
            # Its own window beside min_ttl's: the key is the realm's, suffixed.
            return await self._store.claim_forced_fetch(f"{realm}:api-401", interval) == 0.0
        except StoreUnavailable:
            if self._local_windows.get(realm, 0.0) > now:
                return False
            self._local_windows[realm] = now + interval
            return True

    async def _record(
        self,
        caller: Caller,
        realm: str,
        incoming: IncomingRequest,
        token: AccessToken,
        ctx: RequestContext,
        started: float,
        *,
        status: int | None = None,
        error: BrokerError | None = None,
    ) -> None:
        await self._audit.emit(
            AuditEvent(
                event="api.forwarded",
                time=self._clock.now(),
                outcome="success" if error is None else "failure",
                realm=realm,
                caller=caller.name,
                reason=error.slug if error is not None else None,
                token_sha256=token.fingerprint(),
                request_id=ctx.request_id,
                client_ip=ctx.client_ip,
                method=incoming.method,
                path="/" + incoming.raw_path[:_PATH_IN_AUDIT],
                status=status if error is None else error.status,
                duration_ms=round((self._clock.monotonic() - started) * 1000, 1),
            )
        )


async def _prepare_body(
    incoming: IncomingRequest, limit: int
) -> bytes | AsyncIterator[bytes] | None:
    """Bytes when the body fits the replay limit (so a 401 can be retried), else a stream
    that stops with BodyTooLarge past `limit`; None for a request without a body."""
    if incoming.body is None:
        return None
    chunks: list[bytes] = []
    size = 0
    source = aiter(incoming.body)
    if incoming.content_length is not None and incoming.content_length > REPLAY_LIMIT:
        return _bounded(chunks, source, size, limit)  # too big to replay: straight through
    async for chunk in source:
        chunks.append(chunk)
        size += len(chunk)
        if size > REPLAY_LIMIT:
            return _bounded(chunks, source, size, limit)
    return b"".join(chunks)


async def _bounded(
    head: list[bytes], rest: AsyncIterator[bytes], size: int, limit: int
) -> AsyncIterator[bytes]:
    if size > limit:
        raise BodyTooLarge(f"bodies up to {limit} bytes are forwarded")
    for chunk in head:
        yield chunk
    async for chunk in rest:
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"bodies up to {limit} bytes are forwarded")
        yield chunk
