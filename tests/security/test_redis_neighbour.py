"""Attacker position: whoever can read and write the broker's Redis (a neighbour on a
shared Redis, a leaked Redis password).

Such a neighbour must not be able to make the broker serve a stale or foreign token,
stall a realm, or silence the audit trail.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis

from broker.adapters.redis_connect import REDIS_FAILURES, connect_ha
from broker.adapters.redis_store import RedisTokenStore, create_redis
from broker.adapters.token_seal import Keyring
from broker.core.models import token_fingerprint
from broker.core.rules import backoff_key, forced_fetch_key, lock_key, token_key
from polling import wait_for
from redis_tls import make_tls_files, tls_cluster, tls_sentinel
from stack import Stack, bearer


def served(stack: Stack, url: str, realm: str) -> str:
    """The fingerprint of the token served (a failing assertion shows no token)."""
    response = stack.get_token(url, realm)
    assert 200 == response.status_code
    return token_fingerprint(response.json()["access_token"])


def raw(stack: Stack) -> redis.Redis:
    return redis.Redis.from_url(stack.redis.url)


def evict(stack: Stack, url: str, realm: str) -> None:
    response = httpx.delete(
        f"{url}/v1/realms/{realm}/token", headers=bearer(stack.keys.admin), timeout=30
    )
    assert response.status_code < 300


def stored_doc(stack: Stack, prefix: str, realm: str) -> dict[str, object]:
    value = raw(stack).get(token_key(prefix, realm))
    assert value is not None
    doc: dict[str, object] = json.loads(value)
    return doc


# --- sealed tokens ---------------------------------------------------------------------


def test_sealed_value_relabelled_after_an_eviction_is_refused(stack: Stack) -> None:
    """A token value saved before an eviction and written back with the new generation
    does not open (the generation is sealed in): a fresh token is fetched instead."""
    prefix = f"relabel-{uuid.uuid4().hex[:6]}"
    broker = stack.start_broker(BROKER_KEY_PREFIX=prefix)
    realm = stack.new_realm()
    old_token = served(stack, broker.url, realm.name)
    saved = stored_doc(stack, prefix, realm.name)

    evict(stack, broker.url, realm.name)
    tombstone = stored_doc(stack, prefix, realm.name)
    raw(stack).set(token_key(prefix, realm.name), json.dumps({**saved, "g": tombstone["g"]}))
    fresh = stack.start_broker(name="broker-fresh", BROKER_KEY_PREFIX=prefix)

    assert old_token != served(stack, broker.url, realm.name)
    assert old_token != served(stack, fresh.url, realm.name)


def test_sealed_value_written_back_unchanged_after_an_eviction_is_refused(stack: Stack) -> None:
    """A token value saved before an eviction and written back as it was (its old
    generation) is not served by a broker that saw the eviction."""
    prefix = f"replay-{uuid.uuid4().hex[:6]}"
    broker = stack.start_broker(BROKER_KEY_PREFIX=prefix)
    realm = stack.new_realm()
    old_token = served(stack, broker.url, realm.name)
    saved = raw(stack).get(token_key(prefix, realm.name))
    assert saved is not None

    evict(stack, broker.url, realm.name)
    raw(stack).set(token_key(prefix, realm.name), saved, ex=600)

    assert old_token != served(stack, broker.url, realm.name)


def test_sealed_value_copied_from_another_key_prefix_is_refused(stack: Stack) -> None:
    """Two deployments share Vault (and so the cache key) but not a key prefix: a value
    copied from one prefix to the other does not open there."""
    first, second = f"deploy-a-{uuid.uuid4().hex[:6]}", f"deploy-b-{uuid.uuid4().hex[:6]}"
    realm = stack.new_realm()
    broker_a = stack.start_broker(name="broker-a", BROKER_KEY_PREFIX=first)
    token_a = served(stack, broker_a.url, realm.name)
    value = raw(stack).get(token_key(first, realm.name))
    assert value is not None
    raw(stack).set(token_key(second, realm.name), value, ex=600)

    broker_b = stack.start_broker(name="broker-b", BROKER_KEY_PREFIX=second)

    assert token_a != served(stack, broker_b.url, realm.name)
    assert 2 == stack.idp_requests(realm.name)


# --- backoff and locks -----------------------------------------------------------------


def test_backoff_beyond_the_maximum_is_clamped(stack: Stack) -> None:
    """A shared backoff whose next attempt lies years ahead holds the realm back at most
    BROKER_IDP_BACKOFF_MAX seconds."""
    prefix = f"backoff-{uuid.uuid4().hex[:6]}"
    realm = stack.new_realm()
    years = time.time() + 10 * 365 * 86400
    raw(stack).set(
        backoff_key(prefix, realm.name),
        json.dumps({"failures": 10**9, "next": years, "error": "idp-unavailable"}),
    )
    broker = stack.start_broker(BROKER_KEY_PREFIX=prefix, BROKER_IDP_BACKOFF_MAX="2")

    held = stack.get_token(broker.url, realm.name)

    assert 503 == held.status_code
    assert int(held.headers["retry-after"]) <= 2
    wait_for(
        lambda: stack.get_token(broker.url, realm.name).status_code == 200,
        timeout=30,
        message="the realm stayed held back past BROKER_IDP_BACKOFF_MAX",
    )


def test_lock_without_ttl_is_given_two_leases_to_live(stack: Stack) -> None:
    """A realm's fetch lock written without a TTL is given two leases (30 s) to live the
    first time a broker finds it, so it cannot block the realm's single flight forever."""
    prefix = f"lock-{uuid.uuid4().hex[:6]}"
    realm = stack.new_realm()
    key = lock_key(prefix, realm.name)
    raw(stack).set(key, "not-a-broker")
    broker = stack.start_broker(BROKER_KEY_PREFIX=prefix, BROKER_IDP_TIMEOUT="1")

    assert 200 == stack.get_token(broker.url, realm.name).status_code

    assert 0 < raw(stack).pttl(key) <= 30_000


# --- the audit trail -------------------------------------------------------------------


def test_writer_mark_pushed_ahead_does_not_silence_the_audit_trail(stack: Stack) -> None:
    """When someone sets the audit writer's high-water mark far ahead, the broker's
    next events still reach the stream; the mismatch is logged and counted."""
    prefix = f"mark-{uuid.uuid4().hex[:6]}"
    broker = stack.start_broker(name="broker-marked", BROKER_KEY_PREFIX=prefix)
    realm = stack.new_realm()
    stack.get_token(broker.url, realm.name)
    stream = f"{prefix}:audit"
    client = raw(stack)
    wait_for(lambda: client.xlen(stream) > 0, timeout=10, message="no audit event written")
    marks = list(client.scan_iter(match=f"{{{stream}}}:writer:*"))
    assert 1 == len(marks)
    client.set(marks[0], str(10**15))

    request_id = uuid.uuid4().hex
    httpx.get(
        f"{broker.url}/v1/realms/{realm.name}/token",
        headers={**bearer(stack.keys.everything), "X-Request-ID": request_id},
        timeout=30,
    )

    def recorded() -> bool:
        entries = client.xrange(stream)
        return any(json.loads(f[b"e"]).get("request_id") == request_id for _, f in entries)

    wait_for(recorded, timeout=15, message="the request's audit event never reached the stream")
    metrics = httpx.get(f"{broker.url}/metrics", timeout=10).text
    assert "atlas_broker_audit_append_mismatches_total 1.0" in metrics


# --- TLS to Sentinel and Cluster ---------------------------------------------------------


async def round_trip(url: str) -> bytes | None:
    client = connect_ha(url, client_name="tls-test")
    try:
        await client.set("tls-probe", b"through tls")
        value: bytes | None = await client.get("tls-probe")
        return value
    finally:
        await client.aclose()


async def test_rediss_cluster_url_speaks_tls_to_every_node(tmp_path: Path) -> None:
    """`rediss+cluster://` reaches a TLS-only cluster, verifying its certificate against
    the CA named in the URL."""
    files = make_tls_files(tmp_path / "tls")
    with tls_cluster(tmp_path, files) as port:
        url = f"rediss+cluster://127.0.0.1:{port}?ssl_ca_certs={files.ca}"
        assert b"through tls" == await round_trip(url)


async def test_rediss_sentinel_url_speaks_tls_to_sentinels_and_master(tmp_path: Path) -> None:
    """`rediss+sentinel://` asks a TLS-only sentinel for the master and talks TLS to it."""
    files = make_tls_files(tmp_path / "tls")
    with tls_sentinel(tmp_path, files, "atlas") as port:
        url = f"rediss+sentinel://127.0.0.1:{port}/atlas?ssl_ca_certs={files.ca}"
        assert b"through tls" == await round_trip(url)


async def test_rediss_cluster_with_an_unknown_ca_is_refused(tmp_path: Path) -> None:
    """A cluster whose certificate the named CA did not sign is not talked to."""
    files = make_tls_files(tmp_path / "tls")
    stranger = make_tls_files(tmp_path / "stranger")
    with tls_cluster(tmp_path, files) as port:
        url = f"rediss+cluster://127.0.0.1:{port}?ssl_ca_certs={stranger.ca}"
        with pytest.raises(REDIS_FAILURES):
            await round_trip(url)


async def test_forced_fetch_window_written_for_years_is_bounded(stack: Stack) -> None:
    """A realm's forced-fetch window written with a TTL of years is cut back to the
    interval the broker asks for, so it cannot bar `min_ttl` fetches for long."""
    prefix = f"window-{uuid.uuid4().hex[:6]}"
    key = forced_fetch_key(prefix, "acme")
    raw(stack).set(key, b"1", px=10 * 365 * 86400 * 1000)

    async def keyring() -> Keyring:
        return Keyring.generate()

    store = RedisTokenStore(create_redis(stack.redis.url), prefix=prefix, keyring=keyring)
    try:
        wait = await store.claim_forced_fetch("acme", 10.0)
    finally:
        await store.aclose()

    assert 0 < wait <= 10.0
    assert 0 < raw(stack).pttl(key) <= 10_000


def test_scope_index_filled_by_a_neighbour_bounds_an_eviction(stack: Stack) -> None:
    """Thousands of names written into a realm's scope-set index make an eviction evict
    at most 256 of them (only well-formed scope sets of that realm), and it still answers."""
    prefix = f"scopeidx-{uuid.uuid4().hex[:6]}"
    broker = stack.start_broker(BROKER_KEY_PREFIX=prefix)
    realm = stack.new_realm()
    served(stack, broker.url, realm.name)
    client = raw(stack)
    index = f"{prefix}:scopes:{{{realm.name}}}"
    client.sadd(index, *(f"{realm.name} junk{i}" for i in range(5000)))
    client.sadd(index, "other-realm reports.read", f'{realm.name} bad"scope')

    evict(stack, broker.url, realm.name)

    junk_tombstones = list(client.scan_iter(f"{prefix}:token:{{{realm.name}}}:*", count=1000))
    assert 0 < len(junk_tombstones) <= 256
    assert [] == list(client.scan_iter(f"{prefix}:token:{{other-realm}}*"))
