"""The app factory: the one place where adapters are built, wired and closed."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

from broker import __version__
from broker.adapters.atlas_api import HttpxApiClient, create_api_client
from broker.adapters.audit_fanout import FanOutAuditSink, open_audit_file
from broker.adapters.audit_log import JsonLinesAuditSink
from broker.adapters.audit_losses import AuditLossCollector
from broker.adapters.audit_memory import MemoryAuditTrail
from broker.adapters.audit_redis import RedisAuditSink
from broker.adapters.clock import SystemClock
from broker.adapters.keycloak import KeycloakTokenIssuer, create_idp_client
from broker.adapters.memory_store import MemoryTokenStore
from broker.adapters.policy_file import PolicyFile
from broker.adapters.prometheus import (
    BrokerMetrics,
    MetricsAuditSink,
    StateCollector,
    TimedTokenIssuer,
)
from broker.adapters.rate_limit import LocalRateLimiter, RedisRateLimiter
from broker.adapters.redis_store import RedisTokenStore, create_redis
from broker.adapters.tracing import Tracing, TracingMiddleware
from broker.adapters.vault import VaultAuth, VaultSecretSource
from broker.adapters.workload_jwt import JwksWorkloadVerifier
from broker.core.broker import BrokerTimings, TokenBroker
from broker.core.catalog import RealmCatalog
from broker.core.forwarding import Forwarder, ForwardLimits
from broker.core.identity import Gatekeeper
from broker.core.origins import plain_http_remote
from broker.core.ports import AuditSink, AuditTrail, RateLimiter, TokenStore
from broker.core.supervisor import TaskSupervisor
from broker.http.docs_page import install_docs
from broker.http.health_monitor import DependencyMonitor
from broker.http.hot_routes import HotRoutes
from broker.http.metrics import AccessMiddleware, metrics_listener
from broker.http.middleware import RequestContextMiddleware
from broker.http.openapi import install_openapi, operation_id
from broker.http.problems import install_problem_handlers
from broker.http.routes import admin, audit, forward, gateway, health, oauth, realms, tokens
from broker.http.state import AppState
from broker.logs import set_trace_ids
from broker.settings import Settings, load_settings

log = logging.getLogger(__name__)


def _store(settings: Settings, clock: SystemClock, secrets: VaultSecretSource) -> TokenStore:
    if settings.uses_memory_store:
        return MemoryTokenStore(clock=clock)
    return RedisTokenStore(
        create_redis(settings.redis_url),
        prefix=settings.key_prefix,
        keyring=secrets.cache_keyring,
        backoff_max=settings.idp_backoff_max,
    )


def _store_system(settings: Settings) -> str:
    return "memory" if settings.uses_memory_store else "redis"


async def _audit_and_limits(
    settings: Settings, clock: SystemClock, stack: contextlib.AsyncExitStack
) -> tuple[FanOutAuditSink, AuditTrail, RateLimiter, Callable[[], int]]:
    """The audit trail of record (Redis stream with its spool, or the in-memory ring), its
    JSON-lines copy (stdout or BROKER_AUDIT_FILE), and the per-caller rate limiter."""
    record: RedisAuditSink | MemoryAuditTrail
    limiter: RateLimiter
    if settings.uses_memory_store:
        record, limiter = MemoryAuditTrail(), LocalRateLimiter()
    else:
        client = create_redis(settings.redis_url)
        stack.push_async_callback(client.aclose)
        record = RedisAuditSink(
            client,
            prefix=settings.key_prefix,
            spool_dir=settings.audit_spool_dir,
            retention_days=settings.audit_retention_days,
            required=settings.audit_required,
            clock=clock,
            max_events=settings.audit_max_events,
            spool_max_bytes=settings.audit_spool_max_bytes,
            backlog_max=settings.audit_backlog_max_events,
        )
        await record.start()
        limiter = RedisRateLimiter(client, prefix=settings.key_prefix)
    if settings.audit_file is not None:
        stream = open_audit_file(settings.audit_file)
        stack.callback(stream.close)
        copy = JsonLinesAuditSink(stream)
    else:
        copy = JsonLinesAuditSink()
    audit = FanOutAuditSink(record, copy)
    stack.push_async_callback(audit.aclose)  # after the broker: it flushes what it emitted
    backlog = record.spool_backlog if isinstance(record, RedisAuditSink) else lambda: 0
    return audit, record, limiter, backlog


def create_app(settings: Settings, *, tracing: Tracing | None = None) -> FastAPI:
    """The app; `tracing` defaults to what the OTEL_* environment asks for (usually none)."""
    policy = PolicyFile(settings.policy_file)  # read now: a broken policy stops start-up
    tracing = tracing or Tracing.from_environment()
    metrics = BrokerMetrics(policy=policy.current)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, AppState]]:
        clock = SystemClock()
        for origin in plain_http_remote(settings.allowed_idp_origins):
            log.warning(
                "IdP origin without TLS: client secrets cross the network in the clear",
                extra={"origin": origin},
            )
        async with contextlib.AsyncExitStack() as stack:
            if tracing is not None:
                stack.callback(tracing.shutdown)  # last: exports the spans of shutdown too
                set_trace_ids(tracing.trace_ids)
                stack.callback(set_trace_ids, None)
            secrets = VaultSecretSource(
                url=settings.vault_addr or "http://127.0.0.1:8200",
                auth=VaultAuth(
                    token=settings.vault_token,
                    role_id=settings.vault_role_id,
                    secret_id=settings.vault_secret_id,
                    k8s_role=settings.vault_k8s_role,
                    k8s_mount=settings.vault_k8s_mount,
                    k8s_token_path=settings.vault_k8s_token_path,
                ),
                mount=settings.vault_kv_mount,
                prefix=settings.vault_prefix,
                timeout=settings.vault_timeout,
                default_verify=settings.idp_verify,
            )
            stack.push_async_callback(secrets.aclose)
            issuer = TimedTokenIssuer(
                KeycloakTokenIssuer(
                    client=create_idp_client(timeout=settings.idp_timeout),
                    idp_url=settings.idp_url,
                    clock=clock,
                    allowed_origins=settings.allowed_idp_origins,
                    realm_path=settings.idp_realm_path,
                ),
                metrics,
            )
            stack.push_async_callback(issuer.aclose)
            store = _store(settings, clock, secrets)
            stack.push_async_callback(store.aclose)
            recorded, trail, limiter, spool_backlog = await _audit_and_limits(
                settings, clock, stack
            )
            audit: AuditSink = MetricsAuditSink(recorded, metrics)
            if tracing is not None:
                audit = tracing.audit(audit)
                limiter = tracing.limiter(limiter, system=_store_system(settings))
            if isinstance(trail, RedisAuditSink):
                metrics.add_gauges(AuditLossCollector(trail.losses, trail.backlog_events))
            # The one owner of every background task: crashes are logged and restarted,
            # and closing it (before the clients it uses) cancels and awaits them all.
            tasks = TaskSupervisor(clock)
            stack.push_async_callback(tasks.aclose)
            broker = TokenBroker(
                secrets=tracing.secrets(secrets) if tracing else secrets,
                issuer=tracing.issuer(issuer) if tracing else issuer,
                store=tracing.store(store, system=_store_system(settings)) if tracing else store,
                audit=audit,
                clock=clock,
                timings=BrokerTimings(
                    expiry_skew=settings.expiry_skew,
                    refresh_before=settings.refresh_before,
                    peer_wait=settings.idp_timeout * 2 + 5,
                    idp_backoff_base=settings.idp_backoff_base,
                    idp_backoff_max=settings.idp_backoff_max,
                    vault_poll=settings.vault_poll_seconds,
                    forced_fetch_interval=settings.forced_fetch_interval,
                ),
                supervisor=tasks,
            )
            try:
                await secrets.login()
            except Exception as exc:  # start anyway: reads log in again by themselves
                log.warning("vault login failed at start-up", extra={"error": type(exc).__name__})
            tasks.start("vault-token", secrets.keep_token_fresh)
            broker.start()
            stack.push_async_callback(broker.aclose)
            health = DependencyMonitor({"vault": secrets, "redis": store})
            tasks.start("dependency-health", health.watch)
            metrics.add_gauges(
                StateCollector(
                    statuses=broker.realm_statuses,
                    health=health.snapshot,
                    spool_backlog=spool_backlog,
                    now=clock.now,
                )
            )
            if settings.metrics_port is not None:
                await stack.enter_async_context(
                    metrics_listener(metrics, host=settings.host, port=settings.metrics_port)
                )
            verifier = JwksWorkloadVerifier(
                create_idp_client(timeout=5.0),
                max_age=settings.jwks_max_age,
                stale_grace=settings.jwks_stale_grace,
            )
            stack.push_async_callback(verifier.aclose)
            gate = Gatekeeper(
                policy=policy.current, verifier=verifier, limiter=limiter, audit=audit, clock=clock
            )
            # Failed authentications and throttled requests are audited per minute; the
            # last minute's counts are written at shutdown, before the audit sinks close.
            stack.push_async_callback(gate.flush_refusals)
            tasks.start("refusal-audit", gate.run_refusal_audit)
            catalog = RealmCatalog(secrets=secrets, statuses=broker.realm_statuses)
            api = HttpxApiClient(create_api_client(timeout=settings.forward_timeout))
            stack.push_async_callback(api.aclose)
            forwarder = Forwarder(
                broker=broker,
                secrets=secrets,
                store=store,
                api=api,
                audit=audit,
                clock=clock,
                api_url=settings.api_url,
                allowed_origins=settings.allowed_api_origins,
                limits=ForwardLimits(max_body=settings.forward_max_body),
            )
            yield {
                "app": AppState(
                    settings=settings,
                    broker=broker,
                    policy=policy,
                    gate=gate,
                    audit_trail=trail,
                    realms=catalog,
                    health=health,
                    metrics=metrics,
                    tasks=tasks,
                    forwarder=forwarder,
                )
            }

    app = FastAPI(
        title="Atlas Token Broker",
        version=__version__,
        summary="Ready Atlas API tokens for authorised internal callers.",
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        # Metrics are Prometheus (/metrics); FastAPI's own OpenTelemetry hooks would
        # only add work to every request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        # FastAPI's pages load their script from a CDN: off; BROKER_DOCS serves our own.
        docs_url=None,
        redoc_url=None,
    )
    if settings.docs:
        install_docs(app)
    install_problem_handlers(app)
    install_openapi(app)
    app.include_router(tokens.router)
    app.include_router(forward.router)
    app.include_router(gateway.router)
    app.include_router(oauth.router)
    app.include_router(admin.router)
    app.include_router(realms.router)
    app.include_router(audit.router)
    app.include_router(health.router)
    # Innermost: the hot routes see the request id and source address set outside them.
    app.add_middleware(HotRoutes, routes=app.router.routes)
    app.add_middleware(
        RequestContextMiddleware,
        max_header_bytes=settings.max_header_bytes,
        max_body_bytes=settings.max_body_bytes,
        trusted_proxies=settings.trusted_proxy_networks,
        body_limit=forward.body_limit(
            forward_max=settings.forward_max_body, other=settings.max_body_bytes
        ),
    )
    app.add_middleware(AccessMiddleware, metrics=metrics)  # around the rest: times it all
    if tracing is not None:
        app.add_middleware(TracingMiddleware, tracing=tracing)
    return app


def app_from_environment() -> FastAPI:
    """Factory for uvicorn (`--factory`): settings from the environment."""
    return create_app(load_settings())
