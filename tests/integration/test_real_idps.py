"""The IdPs users really have, played by the development IdP over loopback: opaque access
tokens, discovery documents (and their absence), the Keycloak 17 layout, verify modes and
client_secret_post, each through real broker processes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any

import httpx
import jwt
import pytest
import redis

from atlas_broker_dev.servers import BrokerServer
from broker.core.rules import token_key
from stack import Realm, Stack, bearer, wait_for

PREFIX = "real-idps"


def localhost_alias(stack: Stack) -> str:
    """The development IdP under another name: another origin, the same server (so its
    counters show whatever is sent there)."""
    return stack.idp.url.replace("127.0.0.1", "localhost")


@pytest.fixture(scope="module")
def broker(module_stack: Stack) -> BrokerServer:
    """A broker whose allowed IdP origins include the development IdP's localhost alias."""
    return module_stack.start_broker(
        name="broker-aliased",
        BROKER_KEY_PREFIX=PREFIX,
        BROKER_IDP_ALLOWED_ORIGINS=localhost_alias(module_stack),
    )


@pytest.fixture(scope="module")
def strict_broker(module_stack: Stack) -> BrokerServer:
    """A broker allowing only BROKER_IDP_URL's origin."""
    return module_stack.start_broker(name="broker-strict")


def idp_realm(stack: Stack, prefix: str, **options: Any) -> Realm:
    """A new realm with the given development IdP options, its secret in Vault."""
    vault_fields = options.pop("vault_fields", None)
    realm = stack.new_realm(prefix, in_vault=False)
    stack.idp.set_realm(realm.name, **options)
    stack.openbao.write_realm(
        realm.name,
        {
            "client_id": realm.client_id,
            "client_secret": realm.client_secret,
            **(vault_fields or {}),
        },
    )
    return realm


def token(stack: Stack, broker: BrokerServer, realm: str, key: str | None = None) -> httpx.Response:
    return stack.get_token(broker.url, realm, key)


async def burst(stack: Stack, url: str, realm: str, count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        responses = await asyncio.gather(
            *(
                client.get(f"{url}/v1/realms/{realm}/token", headers=bearer(stack.keys.everything))
                for _ in range(count)
            )
        )
    for response in responses:
        stack.served_tokens(response)
    return list(responses)


def is_jwt(value: str) -> bool:
    try:
        jwt.get_unverified_header(value)
    except jwt.DecodeError:
        return False
    return True


# --- opaque access tokens ------------------------------------------------------------------


async def test_opaque_realm_serves_200_cold_callers_with_one_idp_request(
    module_stack: Stack, broker: BrokerServer
) -> None:
    """200 concurrent cold callers of an opaque realm: one IdP request, one opaque token."""
    realm = idp_realm(module_stack, "opaque", token_format="opaque")
    module_stack.set_fault(realm.name, "delay", seconds=0.5)  # hold the fetch while all arrive

    responses = await burst(module_stack, broker.url, realm.name, 200)

    assert [200] * 200 == [r.status_code for r in responses]
    [value] = {r.json()["access_token"] for r in responses}
    assert (is_jwt(value), module_stack.idp_requests(realm.name)) == (False, 1)


def test_opaque_token_lives_in_redis_for_expires_in(
    module_stack: Stack, broker: BrokerServer
) -> None:
    """An opaque token's Redis TTL comes from expires_in (less the expiry skew), and Redis
    holds it sealed."""
    realm = idp_realm(module_stack, "opaque-ttl", token_format="opaque")
    with module_stack.token_lifetime(900):
        served = token(module_stack, broker, realm.name)
    store = redis.Redis.from_url(module_stack.redis_url)
    ttl = store.ttl(token_key(PREFIX, realm.name))
    stored = store.get(token_key(PREFIX, realm.name)) or b""

    assert served.status_code == 200
    assert 800 < ttl <= 900 - 30  # the default BROKER_EXPIRY_SKEW is 30 s
    assert stored
    assert served.json()["access_token"].encode() not in stored


def test_opaque_token_is_audited_by_its_fingerprint(
    module_stack: Stack, broker: BrokerServer
) -> None:
    """The audit record of an opaque token carries its SHA-256 prefix, not the token."""
    realm = idp_realm(module_stack, "opaque-audit", token_format="opaque")
    value = token(module_stack, broker, realm.name).json()["access_token"]
    fingerprint = hashlib.sha256(value.encode()).hexdigest()[:16]

    def issued() -> list[dict[str, Any]]:
        return [
            event
            for event in module_stack.audit_events(broker.process)
            if event.get("realm") == realm.name and event["event"] == "token.issued"
        ]

    wait_for(lambda: bool(issued()), timeout=10, message="no token.issued record")
    assert issued()[0]["token_sha256"] == fingerprint


def test_opaque_token_via_the_drop_in_endpoint(module_stack: Stack, broker: BrokerServer) -> None:
    """The drop-in token endpoint serves an opaque realm's token with its expires_in."""
    realm = idp_realm(module_stack, "opaque-dropin", token_format="opaque")
    pair = base64.b64encode(f"svc-all:{module_stack.keys.everything}".encode()).decode()
    response = httpx.post(
        f"{broker.url}/auth/realms/{realm.name}/protocol/openid-connect/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {pair}"},
        timeout=30,
    )
    module_stack.served_tokens(response)

    body = response.json()
    assert (response.status_code, is_jwt(body["access_token"])) == (200, False)
    assert 0 < body["expires_in"] <= 3600


def test_opaque_token_is_refused_when_the_realm_verifies_jwks(
    module_stack: Stack, broker: BrokerServer
) -> None:
    """A realm whose secret says verify: jwks refuses an opaque token (502)."""
    realm = idp_realm(
        module_stack, "opaque-jwks", token_format="opaque", vault_fields={"verify": "jwks"}
    )

    assert token(module_stack, broker, realm.name).status_code == 502


def test_realm_listing_shows_the_verify_mode_to_admins(
    module_stack: Stack, broker: BrokerServer
) -> None:
    """GET /v1/realms shows an admin each realm's verify mode once its secret was read."""
    realm = idp_realm(module_stack, "verify-none", vault_fields={"verify": "none"})
    token(module_stack, broker, realm.name)

    listing = httpx.get(
        f"{broker.url}/v1/realms", headers=bearer(module_stack.keys.admin), timeout=30
    ).json()["realms"]

    assert {e["realm"]: e.get("verify") for e in listing}[realm.name] == "none"


# --- discovery -----------------------------------------------------------------------------


def test_discovery_document_names_the_token_endpoint(
    module_stack: Stack, broker: BrokerServer
) -> None:
    """The token request goes where the realm's discovery document says (an allowed alias)."""
    realm = idp_realm(module_stack, "discovered")
    alias = localhost_alias(module_stack)
    issuer = f"{alias}/auth/realms/{realm.name}"  # the development IdP's iss follows the Host
    module_stack.idp.set_realm(
        realm.name,
        discovery_overrides={
            "token_endpoint": f"{issuer}/protocol/openid-connect/token",
            "issuer": issuer,
        },
    )

    response = token(module_stack, broker, realm.name)

    hosts = module_stack.idp.stats()["token_hosts"][realm.name]
    assert (response.status_code, hosts) == (200, {alias.removeprefix("http://"): 1})


def test_keycloak_paths_serve_a_realm_without_discovery(
    module_stack: Stack, broker: BrokerServer
) -> None:
    """A realm with no discovery document is served at Keycloak's paths after one look."""
    realm = idp_realm(module_stack, "undiscovered", discovery=False)

    response = token(module_stack, broker, realm.name)

    stats = module_stack.idp.stats()
    assert (response.status_code, stats["discovery_requests"][realm.name]) == (200, 1)
    assert stats["token_requests"][realm.name] == 1


def test_foreign_token_endpoint_in_discovery_is_refused_with_nothing_sent(
    module_stack: Stack, strict_broker: BrokerServer
) -> None:
    """A discovery document naming a token endpoint at another origin is refused: 502, no
    token request reaches it."""
    realm = idp_realm(module_stack, "misdirected")
    foreign = (
        f"{localhost_alias(module_stack)}/auth/realms/{realm.name}/protocol/openid-connect/token"
    )
    module_stack.idp.set_realm(realm.name, discovery_overrides={"token_endpoint": foreign})

    response = token(module_stack, strict_broker, realm.name)

    assert (response.status_code, response.json()["type"].rsplit("/", 1)[-1]) == (
        502,
        "idp-origin-not-allowed",
    )
    assert module_stack.idp_requests(realm.name) == 0


def test_keycloak17_layout_realm_is_served(module_stack: Stack) -> None:
    """With BROKER_IDP_REALM_PATH=/realms/{realm} a realm of Keycloak 17's layout (no
    discovery, so the path alone leads there) is served."""
    broker = module_stack.start_broker(name="broker-kc17", BROKER_IDP_REALM_PATH="/realms/{realm}")
    realm = idp_realm(module_stack, "kc17", path="/realms", discovery=False)

    response = token(module_stack, broker, realm.name)

    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["iss"] == f"{module_stack.idp.url}/realms/{realm.name}"


# --- client authentication -----------------------------------------------------------------


def test_client_secret_post_realm_is_served(module_stack: Stack, broker: BrokerServer) -> None:
    """A realm accepting only client_secret_post is served when its secret says so."""
    realm = idp_realm(
        module_stack,
        "post",
        auth_methods=["client_secret_post"],
        vault_fields={"auth_method": "client_secret_post"},
    )

    assert token(module_stack, broker, realm.name).status_code == 200


def test_basic_refused_by_a_post_only_realm_is_a_credentials_error(
    module_stack: Stack, broker: BrokerServer
) -> None:
    """A post-only realm refusing Basic (unauthorized_client) reaches the caller as 502."""
    realm = idp_realm(module_stack, "post-only", auth_methods=["client_secret_post"])

    response = token(module_stack, broker, realm.name)

    assert (response.status_code, "unauthorized_client" in response.json()["detail"]) == (
        502,
        True,
    )


# --- an IdP behind a proxy -----------------------------------------------------------------

PUBLIC = "https://login.atlas.example"  # only ever compared, never contacted


def test_realm_behind_a_proxy_is_served_with_its_issuer_from_vault(
    module_stack: Stack, broker: BrokerServer
) -> None:
    """Tokens naming the proxy's public issuer verify when the realm's secret names it."""
    realm = idp_realm(module_stack, "proxied", discovery=False)
    issuer = f"{PUBLIC}/auth/realms/{realm.name}"
    module_stack.idp.set_realm(realm.name, discovery=False, issuer=issuer)
    module_stack.openbao.write_realm(
        realm.name,
        {"client_id": realm.client_id, "client_secret": realm.client_secret, "issuer": issuer},
    )

    assert token(module_stack, broker, realm.name).status_code == 200


def test_realm_behind_a_proxy_without_its_issuer_is_refused(
    module_stack: Stack, broker: BrokerServer
) -> None:
    """Without the issuer in the secret (and no discovery), such tokens fail verification."""
    realm = idp_realm(module_stack, "proxied-unnamed", discovery=False)
    module_stack.idp.set_realm(
        realm.name, discovery=False, issuer=f"{PUBLIC}/auth/realms/{realm.name}"
    )

    response = token(module_stack, broker, realm.name)

    assert (response.status_code, response.json()["type"].rsplit("/", 1)[-1]) == (
        502,
        "idp-bad-response",
    )


def test_unauthorized_client_makes_the_broker_reread_vault(
    module_stack: Stack, broker: BrokerServer
) -> None:
    """When the IdP starts refusing Basic (unauthorized_client), the broker re-reads Vault
    once and succeeds with the secret's new auth_method, without waiting for the poll."""
    realm = idp_realm(module_stack, "post-later")
    assert token(module_stack, broker, realm.name).status_code == 200
    module_stack.idp.set_realm(realm.name, auth_methods=["client_secret_post"])
    module_stack.openbao.write_realm(
        realm.name,
        {
            "client_id": realm.client_id,
            "client_secret": realm.client_secret,
            "auth_method": "client_secret_post",
        },
    )
    httpx.delete(
        f"{broker.url}/v1/realms/{realm.name}/token", headers=bearer(module_stack.keys.admin)
    ).raise_for_status()

    response = token(module_stack, broker, realm.name)

    assert response.status_code == 200, response.text


def test_min_ttl_is_judged_by_an_opaque_tokens_expires_in(
    module_stack: Stack, broker: BrokerServer
) -> None:
    """An opaque token living 900 s satisfies min_ttl=600 and not min_ttl=1200 (422)."""
    realm = idp_realm(module_stack, "opaque-minttl", token_format="opaque")
    with module_stack.token_lifetime(900):
        served = module_stack.get_token(broker.url, realm.name, min_ttl=600)
        refused = module_stack.get_token(broker.url, realm.name, min_ttl=1200)

    assert (served.status_code, refused.status_code) == (200, 422)


def test_opaque_token_is_refreshed_ahead_in_the_background(module_stack: Stack) -> None:
    """An opaque token living 4 s is fetched again before it expires with no caller asking."""
    broker = module_stack.start_broker(
        name="broker-refresh", BROKER_EXPIRY_SKEW="1", BROKER_REFRESH_BEFORE="2"
    )
    realm = idp_realm(module_stack, "opaque-refresh", token_format="opaque")

    def events(name: str) -> int:
        records = module_stack.audit_events(broker.process)
        return sum(e["event"] == name and e["realm"] == realm.name for e in records)

    with module_stack.token_lifetime(4):
        served = module_stack.get_token(broker.url, realm.name, min_ttl=0)
        wait_for(lambda: events("token.fetched") >= 2, timeout=30, message="no refresh")

    assert (served.status_code, events("token.issued")) == (200, 1)  # one caller, two fetches
