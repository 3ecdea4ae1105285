"""The core token path against real servers: OpenBao, Redis, the development IdP over HTTP."""

from __future__ import annotations

import calendar
import time

import httpx
import jwt
import pytest
import redis

from broker.core.rules import token_key
from stack import Realm, Stack

PROBLEM = "application/problem+json"


@pytest.fixture
def broker_url(stack: Stack) -> str:
    return stack.start_broker().url


def get_token(
    stack: Stack, url: str, realm: str, key: str | None = None, **params: int
) -> httpx.Response:
    return stack.get_token(url, realm, key, **params)


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert status == response.status_code, response.text
    assert PROBLEM == response.headers["content-type"]
    body: dict[str, object] = response.json()
    assert status == body["status"]
    assert {"type", "title", "status", "detail", "request_id"} <= set(body)
    assert response.headers["x-request-id"] == body["request_id"]
    return body


def test_caller_gets_a_token_signed_by_the_realm(stack: Stack, broker_url: str) -> None:
    """An allowed caller receives the IdP's JWT for the realm, with its expiry."""
    realm = stack.new_realm()
    response = get_token(stack, broker_url, realm.name)
    assert 200 == response.status_code
    body = response.json()
    assert ("Bearer", realm.name) == (body["token_type"], body["realm"])
    certs = httpx.get(
        f"{stack.idp.url}/auth/realms/{realm.name}/protocol/openid-connect/certs"
    ).json()
    key = jwt.PyJWK(certs["keys"][0])
    claims = jwt.decode(
        body["access_token"], key=key, algorithms=["RS256"], options={"verify_aud": False}
    )
    assert realm.client_id == claims["azp"]
    assert abs(claims["exp"] - time.time() - body["expires_in"]) <= 2
    # expires_at is min(exp, now + expires_in): the JWT's exp, or up to a second before it.
    expires_at = calendar.timegm(time.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert 0 <= claims["exp"] - expires_at <= 1


def test_token_response_is_not_cacheable(stack: Stack, broker_url: str) -> None:
    """Token responses carry Cache-Control: no-store and a request id."""
    response = get_token(stack, broker_url, stack.new_realm().name)
    assert "no-store" == response.headers["cache-control"]
    assert response.headers["x-request-id"]


def test_request_id_is_taken_from_the_request(stack: Stack, broker_url: str) -> None:
    """A well-formed X-Request-ID is echoed; a malformed one is replaced."""
    good = httpx.get(f"{broker_url}/healthz", headers={"X-Request-ID": "abc-123"})
    bad = httpx.get(f"{broker_url}/healthz", headers={"X-Request-ID": "no spaces <allowed>"})
    assert "abc-123" == good.headers["x-request-id"]
    assert bad.headers["x-request-id"] not in ("", "no spaces <allowed>")


def test_token_is_cached_in_redis_with_ttl_from_exp(stack: Stack) -> None:
    """The token lands at {prefix}:token:{realm} with TTL exp - now - skew."""
    prefix = "ttl-check"
    url = stack.start_broker(BROKER_KEY_PREFIX=prefix, BROKER_EXPIRY_SKEW="30").url
    realm = stack.new_realm()
    body = get_token(stack, url, realm.name).json()
    exp = jwt.decode(body["access_token"], options={"verify_signature": False})["exp"]
    client = redis.Redis.from_url(stack.redis.url)
    ttl = client.ttl(token_key(prefix, realm.name))
    assert abs((exp - time.time() - 30) - ttl) <= 2


def test_second_request_is_served_without_the_idp(stack: Stack, broker_url: str) -> None:
    """Repeated requests for a realm make one IdP request in all."""
    realm = stack.new_realm()
    first = get_token(stack, broker_url, realm.name).json()["access_token"]
    again = [get_token(stack, broker_url, realm.name).json()["access_token"] for _ in range(5)]
    assert [first] * 5 == again
    assert 1 == stack.idp_requests(realm.name)


def test_replica_reads_the_token_another_replica_fetched(stack: Stack) -> None:
    """A second replica sharing Redis serves the first one's token without the IdP."""
    first, second = stack.start_brokers(2)
    realm = stack.new_realm()
    token = get_token(stack, first.url, realm.name).json()["access_token"]
    assert token == get_token(stack, second.url, realm.name).json()["access_token"]
    assert 1 == stack.idp_requests(realm.name)


def test_min_ttl_beyond_the_cached_token_fetches_a_fresh_one(stack: Stack, broker_url: str) -> None:
    """A cached token with less than min_ttl left is replaced by a fresh one."""
    with stack.token_lifetime(200):
        realm = stack.new_realm()
        first = get_token(stack, broker_url, realm.name, min_ttl=10).json()
        # 200 s tokens minus the 30 s skew leave < 170 s: asking for 100 is met by the
        # cached one; 171 cannot be met even by a fresh one, which the broker knows from
        # the token it has seen, so it does not ask the IdP.
        assert (
            first["access_token"]
            == get_token(stack, broker_url, realm.name, min_ttl=100).json()["access_token"]
        )
        assert_problem(get_token(stack, broker_url, realm.name, min_ttl=171), 422)
        assert 1 == stack.idp_requests(realm.name)


def test_missing_credential_is_401_with_challenge(stack: Stack, broker_url: str) -> None:
    """No Authorization header: 401 problem with WWW-Authenticate: Bearer."""
    response = httpx.get(f"{broker_url}/v1/realms/acme/token")
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    ["Bearer not-a-known-key", "Basic dXNlcjpwYXNz", "Bearer", "Token abc", "garbage"],
)
def test_unknown_or_malformed_credential_is_401(stack: Stack, broker_url: str, header: str) -> None:
    """An unknown key or a malformed Authorization header is refused with 401."""
    response = httpx.get(f"{broker_url}/v1/realms/acme/token", headers={"Authorization": header})
    assert_problem(response, 401)


def test_caller_not_allowed_the_realm_is_403(stack: Stack, broker_url: str) -> None:
    """A caller asking for a realm outside its list gets 403, and the IdP is not asked."""
    realm = stack.new_realm()
    assert_problem(get_token(stack, broker_url, realm.name, key=stack.keys.limited), 403)
    assert 0 == stack.idp_requests(realm.name)


def test_forbidden_comes_before_existence(stack: Stack, broker_url: str) -> None:
    """A realm that does not exist is 403 for a caller not allowed it, so nothing leaks."""
    response = get_token(stack, broker_url, "no-such-realm-at-all", key=stack.keys.limited)
    assert_problem(response, 403)


def test_unknown_realm_is_404_for_an_allowed_caller(stack: Stack, broker_url: str) -> None:
    """An allowed caller asking for a realm with no credentials in Vault gets 404."""
    assert_problem(get_token(stack, broker_url, "absent-from-vault"), 404)


def test_soft_deleted_credentials_are_404_not_empty(stack: Stack, broker_url: str) -> None:
    """A realm whose latest secret version was deleted is not served with empty credentials."""
    realm = stack.new_realm()
    stack.openbao.client().secrets.kv.v2.delete_latest_version_of_secret(
        path=f"atlas/realms/{realm.name}", mount_point="secret"
    )
    assert_problem(get_token(stack, broker_url, realm.name), 404)
    assert 0 == stack.idp_requests(realm.name)


def test_incomplete_credentials_are_502(stack: Stack, broker_url: str) -> None:
    """A realm secret without client_secret is reported, not sent to the IdP."""
    realm = stack.new_realm(in_vault=False)
    stack.openbao.write_realm(realm.name, {"client_id": realm.client_id})
    assert_problem(get_token(stack, broker_url, realm.name), 502)
    assert 0 == stack.idp_requests(realm.name)


def test_idp_refusing_the_credentials_is_502_with_reason(stack: Stack, broker_url: str) -> None:
    """A wrong secret in Vault: the IdP's invalid_client is reported as 502 with that reason."""
    realm = stack.new_realm(in_vault=False)
    stack.openbao.write_realm(
        realm.name, {"client_id": realm.client_id, "client_secret": "wrong-secret"}
    )
    stack.leak_watch.add("wrong-secret")
    body = assert_problem(get_token(stack, broker_url, realm.name), 502)
    assert "invalid_client" in str(body["detail"])
    assert "wrong-secret" not in str(body)


@pytest.mark.parametrize(
    "mode",
    [
        "garbage",
        "html",
        "status_500",
        "no_access_token",
        "wrong_token_type",
        "expired",
        "bad_signature",
        "alg_none",
        "foreign_issuer",
    ],
)
def test_idp_misbehaving_is_502_and_nothing_is_cached(stack: Stack, mode: str) -> None:
    """Anything but a valid token response is a 502 and leaves the cache empty."""
    prefix = f"bad-{mode}"
    url = stack.start_broker(BROKER_KEY_PREFIX=prefix).url
    realm = stack.new_realm()
    stack.set_fault(realm.name, mode)
    try:
        assert_problem(get_token(stack, url, realm.name), 502)
    finally:
        stack.idp_control("DELETE", "/faults")
    assert 0 == redis.Redis.from_url(stack.redis.url).exists(token_key(prefix, realm.name))


def test_idp_hanging_past_the_timeout_is_503(stack: Stack) -> None:
    """An IdP that does not answer within BROKER_IDP_TIMEOUT gives 503 with Retry-After."""
    url = stack.start_broker(BROKER_IDP_TIMEOUT="1").url
    realm = stack.new_realm()
    stack.set_fault(realm.name, "hang")
    try:
        started = time.monotonic()
        response = get_token(stack, url, realm.name)
        assert time.monotonic() - started < 10
    finally:
        stack.idp_control("DELETE", "/faults")
    assert_problem(response, 503)
    assert response.headers["retry-after"].isdigit()


def test_idp_unreachable_is_503(stack: Stack) -> None:
    """An IdP nobody listens for gives 503 with Retry-After."""
    from atlas_broker_dev.processes import free_port

    url = stack.start_broker(BROKER_IDP_URL=f"http://127.0.0.1:{free_port()}").url
    response = get_token(stack, url, stack.new_realm().name)
    assert_problem(response, 503)
    assert "retry-after" in response.headers


def test_vault_unreachable_is_503(stack: Stack) -> None:
    """With Vault unreachable and nothing cached, the answer is 503 with Retry-After."""
    from atlas_broker_dev.processes import free_port

    url = stack.start_broker(BROKER_VAULT_ADDR=f"http://127.0.0.1:{free_port()}").url
    response = get_token(stack, url, stack.new_realm().name)
    assert_problem(response, 503)
    assert "retry-after" in response.headers


def test_realm_token_url_in_vault_overrides_the_idp_url(stack: Stack) -> None:
    """A realm's `token_url` in Vault at an allowed origin is used instead of BROKER_IDP_URL."""
    from atlas_broker_dev.processes import free_port

    url = stack.start_broker(
        BROKER_IDP_URL=f"http://127.0.0.1:{free_port()}", BROKER_IDP_ALLOWED_ORIGINS=stack.idp.url
    ).url
    realm: Realm = stack.new_realm(in_vault=False)
    stack.openbao.write_realm(
        realm.name,
        {
            "client_id": realm.client_id,
            "client_secret": realm.client_secret,
            "token_url": f"{stack.idp.url}/auth/realms/{realm.name}/protocol/openid-connect/token",
        },
    )
    assert 200 == get_token(stack, url, realm.name).status_code


def test_health_and_readiness(stack: Stack, broker_url: str) -> None:
    """/healthz answers alive; /readyz reports each dependency by name."""
    assert {"status": "alive"} == httpx.get(f"{broker_url}/healthz").json()
    ready = httpx.get(f"{broker_url}/readyz")
    assert 200 == ready.status_code
    assert {"vault": "ok", "redis": "ok"} == ready.json()["checks"]
