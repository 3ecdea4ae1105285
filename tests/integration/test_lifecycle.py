"""Credential lifecycle: rotation in Vault, the rotate and evict operations, generations."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time

import httpx

from polling import eventually, wait_for
from stack import Realm, Stack, bearer


def rotate_secret(stack: Stack, realm: Realm) -> tuple[str, int]:
    """A new client secret, first at the IdP (the old one stops working), then in Vault."""
    new_secret = secrets.token_urlsafe(24)
    stack.leak_watch.add(new_secret)
    stack.idp_control(
        "PUT", f"/realms/{realm.name}/clients/{realm.client_id}", json={"client_secret": new_secret}
    )
    version = stack.openbao.write_realm(
        realm.name, {"client_id": realm.client_id, "client_secret": new_secret}
    )
    return new_secret, version


class RequestStream:
    """Requests a realm's token in a loop on a thread and keeps every failure."""

    def __init__(self, stack: Stack, url: str, realm: str) -> None:
        self.stack, self.url, self.realm = stack, url, realm
        self.failures: list[str] = []
        self.served = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                response = client.get(
                    f"{self.url}/v1/realms/{self.realm}/token",
                    headers=bearer(self.stack.keys.everything),
                )
                self.stack.served_tokens(response)
                if response.status_code == 200:
                    self.served += 1
                else:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
                self._stop.wait(0.02)

    def __enter__(self) -> RequestStream:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def fetched_versions(stack: Stack, processes: list[object], realm: str) -> set[int]:
    versions = set()
    for process in processes:
        for event in stack.audit_events(process):  # type: ignore[arg-type]
            if event["event"] == "token.fetched" and event["realm"] == realm:
                versions.add(event["credential_version"])
    return versions


def test_secret_rotated_in_vault_is_used_within_the_poll_interval(stack: Stack) -> None:
    """Rotating the secret at the IdP and in Vault under a live stream fails no request,
    and the broker fetches with the new version within the poll interval."""
    broker = stack.start_broker(BROKER_VAULT_POLL_SECONDS="1")
    realm = stack.new_realm()
    assert 200 == stack.get_token(broker.url, realm.name).status_code
    with RequestStream(stack, broker.url, realm.name) as stream:
        _, version = rotate_secret(stack, realm)
        wait_for(
            lambda: version in fetched_versions(stack, [broker.process], realm.name),
            timeout=5,
            message="the new secret version was not used within the poll interval",
        )
    assert [] == stream.failures
    assert stream.served > 0


def test_rotate_operation_uses_the_new_secret_at_once(stack: Stack) -> None:
    """POST /v1/realms/{realm}/rotate re-reads Vault, drops the old token and fetches anew."""
    broker = stack.start_broker()  # the default 30 s poll: only the operation can explain it
    realm = stack.new_realm()
    old = stack.get_token(broker.url, realm.name).json()["access_token"]
    with RequestStream(stack, broker.url, realm.name) as stream:
        _, version = rotate_secret(stack, realm)
        response = httpx.post(
            f"{broker.url}/v1/realms/{realm.name}/rotate",
            headers=bearer(stack.keys.admin),
            timeout=30,
        )
    assert 200 == response.status_code, response.text
    status = response.json()
    assert (version, True, None) == (
        status["credential_version"],
        status["cached"],
        status["last_error"],
    )
    assert old != stack.get_token(broker.url, realm.name).json()["access_token"]
    assert [] == stream.failures


def test_rotate_and_evict_need_the_admin_role(stack: Stack) -> None:
    """Plain callers get 403 from the admin operations."""
    broker = stack.start_broker()
    realm = stack.new_realm()
    headers = bearer(stack.keys.everything)
    assert (
        403
        == httpx.post(f"{broker.url}/v1/realms/{realm.name}/rotate", headers=headers).status_code
    )
    assert (
        403
        == httpx.delete(f"{broker.url}/v1/realms/{realm.name}/token", headers=headers).status_code
    )


def test_invalid_client_makes_the_broker_reread_vault(stack: Stack) -> None:
    """When the IdP refuses the cached secret, the broker re-reads Vault once and succeeds
    with the new secret, without waiting for the poll."""
    broker = stack.start_broker(BROKER_IDP_BACKOFF_BASE="0.1")
    realm = stack.new_realm()
    first = stack.get_token(broker.url, realm.name).json()["access_token"]
    rotate_secret(stack, realm)
    httpx.delete(
        f"{broker.url}/v1/realms/{realm.name}/token", headers=bearer(stack.keys.admin)
    ).raise_for_status()
    response = stack.get_token(broker.url, realm.name)
    assert 200 == response.status_code, response.text
    assert first != response.json()["access_token"]


def test_eviction_reaches_every_replica_within_a_second(stack: Stack) -> None:
    """DELETE on one replica: within a second none of the three serves the old token."""
    replicas = stack.start_brokers(3)
    realm = stack.new_realm()
    old = {stack.get_token(r.url, realm.name).json()["access_token"] for r in replicas}
    assert 1 == len(old)
    response = httpx.delete(
        f"{replicas[0].url}/v1/realms/{realm.name}/token", headers=bearer(stack.keys.admin)
    )
    assert 204 == response.status_code
    evicted_at = time.monotonic()
    for replica in replicas:
        wait_for(
            lambda url=replica.url: (
                stack.get_token(url, realm.name).json()["access_token"] not in old
            ),
            timeout=max(0.1, 1.0 - (time.monotonic() - evicted_at)),
            message=f"{replica.url} still serves the evicted token",
        )
    events = stack.audit_events(replicas[0].process)
    assert ["secops"] == [e["caller"] for e in events if e["event"] == "token.evicted"]


async def test_fetch_racing_an_eviction_does_not_resurrect_its_token(stack: Stack) -> None:
    """A fetch that began before an eviction neither stores nor serves its token."""
    broker = stack.start_broker()
    realm = stack.new_realm()
    stack.set_fault(realm.name, "delay", seconds=1.5)
    async with httpx.AsyncClient(timeout=30) as client:
        pending = asyncio.create_task(
            client.get(
                f"{broker.url}/v1/realms/{realm.name}/token", headers=bearer(stack.keys.everything)
            )
        )
        await eventually(  # the fetch is at the IdP now
            lambda: stack.idp_requests(realm.name) >= 1,
            timeout=5,
            interval=0.02,
            message="the fetch never reached the IdP",
        )
        evicted = await client.delete(
            f"{broker.url}/v1/realms/{realm.name}/token", headers=bearer(stack.keys.admin)
        )
        assert 204 == evicted.status_code
        response = await pending
    stack.served_tokens(response)
    stack.idp_control("DELETE", "/faults")
    assert 200 == response.status_code
    fetched = [
        e
        for e in stack.audit_events(broker.process)
        if e["event"] == "token.fetched" and e["realm"] == realm.name
    ]
    issued = [
        e
        for e in stack.audit_events(broker.process)
        if e["event"] == "token.issued" and e["realm"] == realm.name
    ]
    assert 2 == len(fetched)  # the superseded fetch and the one after the eviction
    assert [fetched[1]["token_sha256"]] == [e["token_sha256"] for e in issued]
    again = stack.get_token(broker.url, realm.name).json()["access_token"]
    assert response.json()["access_token"] == again
