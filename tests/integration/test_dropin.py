"""The drop-in token endpoint: unmodified OAuth2 client libraries get tokens from the
broker with only a new URL and their broker credentials, and every refusal is an RFC 6749
§5.2 error."""

from __future__ import annotations

import base64
import secrets
import time
import urllib.parse
import warnings
from typing import Any

import authlib.deprecate
import httpx
import jwt
import pytest
import yaml
from oauthlib.oauth2 import BackendApplicationClient
from oauthlib.oauth2.rfc6749.errors import InvalidClientError
from requests_oauthlib import OAuth2Session

from atlas_broker_dev.processes import free_port
from atlas_broker_dev.servers import BrokerServer
from broker.core.policy import hash_key
from stack import Realm, Stack, bearer

with warnings.catch_warnings():
    # authlib 1.9 prefers its httpx2 package and warns when it falls back to httpx; the
    # clients under test are the httpx ones our callers run.
    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.httpx_client import OAuth2Client

EVERYTHING = "svc-all"  # caller names in the suite's policy (tests/conftest.py)
LIMITED = "svc-limited"
RFC_ERROR_KEYS = {"error", "error_description"}


@pytest.fixture(scope="module")
def broker(module_stack: Stack) -> BrokerServer:
    return module_stack.start_broker(BROKER_IDP_TIMEOUT="2")


@pytest.fixture(scope="module")
def realm(module_stack: Stack) -> Realm:
    return module_stack.new_realm("dropin")


@pytest.fixture
def key(module_stack: Stack) -> str:
    return module_stack.keys.everything


def token_url(broker: BrokerServer, realm: str) -> str:
    return f"{broker.url}/auth/realms/{realm}/protocol/openid-connect/token"


def basic(name: str, secret: str) -> dict[str, str]:
    pair = base64.b64encode(f"{name}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


def post_token(
    stack: Stack,
    broker: BrokerServer,
    realm: str,
    *,
    data: dict[str, str] | str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A raw token request; form data is sent urlencoded unless given as a string."""
    all_headers = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
    body = data if isinstance(data, str) else urllib.parse.urlencode(data or {})
    response = httpx.post(token_url(broker, realm), content=body, headers=all_headers, timeout=30)
    if response.status_code == 200:
        stack.leak_watch.add(response.json()["access_token"])
    return response


def verified_claims(stack: Stack, realm: str, token: str) -> dict[str, Any]:
    certs = httpx.get(f"{stack.idp.url}/auth/realms/{realm}/protocol/openid-connect/certs")
    claims: dict[str, Any] = jwt.decode(
        token,
        key=jwt.PyJWK(certs.json()["keys"][0]),
        algorithms=["RS256"],
        issuer=f"{stack.idp.url}/auth/realms/{realm}",
        options={"verify_aud": False},
    )
    return claims


def assert_oauth_error(response: httpx.Response, status: int, error: str) -> dict[str, str]:
    shown = "a token" if response.status_code == 200 else response.text  # keep tokens out
    assert (status, error) == (response.status_code, response.json().get("error")), shown
    assert "application/json" == response.headers["content-type"]
    assert "no-store" == response.headers["cache-control"]
    body: dict[str, str] = response.json()
    assert RFC_ERROR_KEYS == set(body)
    return body


@pytest.fixture
def insecure_oauthlib(monkeypatch: pytest.MonkeyPatch) -> None:
    # oauthlib refuses plain-HTTP token URLs unless told otherwise; the stack is loopback.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")


# -- unmodified clients -----------------------------------------------------------------


def test_authlib_httpx_client_gets_a_token_signed_by_the_idp(
    module_stack: Stack, broker: BrokerServer, realm: Realm, key: str
) -> None:
    """authlib's httpx OAuth2Client with client_secret_basic receives the realm's IdP JWT."""
    with OAuth2Client(client_id=EVERYTHING, client_secret=key) as client:
        token = client.fetch_token(token_url(broker, realm.name), grant_type="client_credentials")
    module_stack.leak_watch.add(token["access_token"])
    assert "Bearer" == token["token_type"]
    assert (
        realm.client_id == verified_claims(module_stack, realm.name, token["access_token"])["azp"]
    )
    assert 3540 <= token["expires_in"] <= 3600


def test_authlib_client_secret_post_gets_a_token(
    module_stack: Stack, broker: BrokerServer, realm: Realm, key: str
) -> None:
    """authlib with client_secret_post (credentials as form fields) receives a token too."""
    with OAuth2Client(
        client_id=EVERYTHING, client_secret=key, token_endpoint_auth_method="client_secret_post"
    ) as client:
        token = client.fetch_token(token_url(broker, realm.name), grant_type="client_credentials")
    module_stack.leak_watch.add(token["access_token"])
    assert (
        realm.client_id == verified_claims(module_stack, realm.name, token["access_token"])["azp"]
    )


@pytest.mark.usefixtures("insecure_oauthlib")
def test_requests_oauthlib_backend_client_gets_a_token(
    module_stack: Stack, broker: BrokerServer, realm: Realm, key: str
) -> None:
    """requests-oauthlib's BackendApplicationClient session receives the realm's IdP JWT."""
    session = OAuth2Session(client=BackendApplicationClient(client_id=EVERYTHING))
    token = session.fetch_token(
        token_url=token_url(broker, realm.name), client_id=EVERYTHING, client_secret=key
    )
    module_stack.leak_watch.add(token["access_token"])
    assert (
        realm.client_id == verified_claims(module_stack, realm.name, token["access_token"])["azp"]
    )
    assert "Bearer" == token["token_type"]


def test_authlib_sees_invalid_client_for_a_wrong_key(broker: BrokerServer, realm: Realm) -> None:
    """An unknown key reaches authlib as its OAuthError with error invalid_client."""
    with (
        OAuth2Client(client_id=EVERYTHING, client_secret="not-a-key") as client,
        pytest.raises(OAuthError) as caught,
    ):
        client.fetch_token(token_url(broker, realm.name), grant_type="client_credentials")
    assert "invalid_client" == caught.value.error


@pytest.mark.usefixtures("insecure_oauthlib")
def test_requests_oauthlib_sees_invalid_client_for_a_wrong_key(
    broker: BrokerServer, realm: Realm
) -> None:
    """An unknown key reaches requests-oauthlib as its InvalidClientError."""
    session = OAuth2Session(client=BackendApplicationClient(client_id=EVERYTHING))
    with pytest.raises(InvalidClientError):
        session.fetch_token(
            token_url=token_url(broker, realm.name), client_id=EVERYTHING, client_secret="nope"
        )


# -- the answer ---------------------------------------------------------------------------


def test_answer_has_the_idp_fields_and_is_not_cacheable(
    module_stack: Stack, broker: BrokerServer, realm: Realm, key: str
) -> None:
    """A token answer has exactly the IdP's fields, with no-store and no-cache headers."""
    response = post_token(
        module_stack,
        broker,
        realm.name,
        data={"grant_type": "client_credentials"},
        headers=basic(EVERYTHING, key),
    )
    assert 200 == response.status_code, response.text
    assert {"access_token", "token_type", "expires_in", "scope"} == set(response.json())
    assert ("no-store", "no-cache") == (
        response.headers["cache-control"],
        response.headers["pragma"],
    )
    assert "profile email" == response.json()["scope"]


def test_serves_the_token_the_v1_endpoint_serves(
    module_stack: Stack, broker: BrokerServer, key: str
) -> None:
    """Both endpoints share the realm's one cached token: one IdP request in all."""
    realm = module_stack.new_realm("shared")
    v1 = httpx.get(f"{broker.url}/v1/realms/{realm.name}/token", headers=bearer(key), timeout=30)
    module_stack.served_tokens(v1)
    dropin = post_token(
        module_stack,
        broker,
        realm.name,
        data={"grant_type": "client_credentials"},
        headers=basic(EVERYTHING, key),
    )
    assert v1.json()["access_token"] == dropin.json()["access_token"]
    assert 1 == module_stack.idp_requests(realm.name)


def test_issuance_is_audited_under_the_caller_name(
    module_stack: Stack, broker: BrokerServer, key: str
) -> None:
    """A drop-in issuance writes the same token.issued audit event as the v1 endpoint."""
    realm = module_stack.new_realm("audited")
    response = post_token(
        module_stack,
        broker,
        realm.name,
        data={"grant_type": "client_credentials"},
        headers=basic(EVERYTHING, key),
    )
    issued = [
        e
        for e in module_stack.audit_events(broker.process)
        if e["event"] == "token.issued" and e["realm"] == realm.name
    ]
    assert [EVERYTHING] == [e["caller"] for e in issued]
    assert response.headers["x-request-id"] == issued[0]["request_id"]


def test_rfc6749_encoded_basic_credentials_are_accepted(
    module_stack: Stack, broker: BrokerServer, realm: Realm, key: str
) -> None:
    """Basic credentials form-urlencoded before base64 (RFC 6749 §2.3.1) are decoded."""
    encoded_name = EVERYTHING.replace("-", "%2D")
    response = post_token(
        module_stack,
        broker,
        realm.name,
        data={"grant_type": "client_credentials"},
        headers=basic(encoded_name, urllib.parse.quote(key, safe="")),
    )
    assert 200 == response.status_code, response.text


def test_min_ttl_beyond_the_token_lifetime_is_invalid_request(
    module_stack: Stack, broker: BrokerServer, key: str
) -> None:
    """The broker's min_ttl form field asking more than a token lives: invalid_request."""
    realm = module_stack.new_realm("minttl")
    too_long = post_token(
        module_stack,
        broker,
        realm.name,
        data={"grant_type": "client_credentials", "min_ttl": "7200"},
        headers=basic(EVERYTHING, key),
    )
    assert_oauth_error(too_long, 400, "invalid_request")


# -- RFC 6749 §5.2 errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "credentials"),
    [
        ("wrong key", lambda key: basic(EVERYTHING, "not-a-key")),
        ("another caller's name", lambda key: basic(LIMITED, key)),
        ("no credentials", lambda key: {}),
        ("malformed Basic", lambda key: {"Authorization": "Basic !!!not-base64"}),
        ("Basic without a colon", lambda key: {"Authorization": "Basic c3ZjLWFsbA=="}),
        ("a Bearer key", lambda key: bearer(key)),
    ],
)
def test_bad_client_credentials_are_invalid_client_with_basic_challenge(
    module_stack: Stack, broker: BrokerServer, realm: Realm, key: str, name: str, credentials: Any
) -> None:
    """Missing, unknown, mismatched or malformed credentials: 401 invalid_client + Basic."""
    response = post_token(
        module_stack,
        broker,
        realm.name,
        data={"grant_type": "client_credentials"},
        headers=credentials(key),
    )
    body = assert_oauth_error(response, 401, "invalid_client")
    assert 'Basic realm="atlas-broker"' == response.headers["www-authenticate"]
    assert key not in str(body)


def test_refused_client_is_counted_as_an_auth_failure(stack: Stack, realm: Realm) -> None:
    """An invalid_client refusal is counted in its source's auth.failed audit event, as on
    the v1 endpoint (written when the minute ends, or at shutdown as here)."""
    broker = stack.start_broker()
    response = post_token(
        stack,
        broker,
        realm.name,
        data={"grant_type": "client_credentials"},
        headers=basic(EVERYTHING, "not-a-key"),
    )
    broker.process.stop()
    failed = [e for e in stack.audit_events(broker.process) if e["event"] == "auth.failed"]
    assert 401 == response.status_code
    assert [(1, {"invalid-client": 1})] == [(e["count"], e["reasons"]) for e in failed]


def test_caller_over_its_rate_limit_is_temporarily_unavailable(stack: Stack) -> None:
    """A caller beyond its rate limit: 429 temporarily_unavailable with Retry-After."""
    key = secrets.token_urlsafe(32)
    stack.leak_watch.add(key)
    policy = stack.log_dir / "throttled-policy.yaml"
    policy.parent.mkdir(parents=True, exist_ok=True)
    policy.write_text(
        yaml.safe_dump(
            {
                "callers": [
                    {
                        "name": "throttled",
                        "api_key_sha256": hash_key(key),
                        "realms": ["*"],
                        "rate_limit": {"per_second": 0.01, "burst": 1},
                    }
                ]
            }
        )
    )
    broker = stack.start_broker(BROKER_POLICY_FILE=str(policy))
    realm = stack.new_realm("throttled").name
    form = {"grant_type": "client_credentials"}
    first = post_token(stack, broker, realm, data=form, headers=basic("throttled", key))
    second = post_token(stack, broker, realm, data=form, headers=basic("throttled", key))
    assert 200 == first.status_code
    assert_oauth_error(second, 429, "temporarily_unavailable")
    assert second.headers["retry-after"].isdigit()


def test_wrong_post_credentials_are_invalid_client(
    module_stack: Stack, broker: BrokerServer, realm: Realm
) -> None:
    """client_id/client_secret form fields that match no caller: 401 invalid_client."""
    response = post_token(
        module_stack,
        broker,
        realm.name,
        data={"grant_type": "client_credentials", "client_id": EVERYTHING, "client_secret": "x"},
    )
    assert_oauth_error(response, 401, "invalid_client")


def test_realm_not_allowed_is_unauthorized_client(
    module_stack: Stack, broker: BrokerServer
) -> None:
    """A caller not allowed the realm gets 400 unauthorized_client and the IdP is not asked."""
    realm = module_stack.new_realm("notyours")
    response = post_token(
        module_stack,
        broker,
        realm.name,
        data={"grant_type": "client_credentials"},
        headers=basic(LIMITED, module_stack.keys.limited),
    )
    assert_oauth_error(response, 400, "unauthorized_client")
    assert 0 == module_stack.idp_requests(realm.name)


def test_not_allowed_realm_that_does_not_exist_gets_the_same_answer(
    module_stack: Stack, broker: BrokerServer
) -> None:
    """A realm that exists nowhere is unauthorized_client too, so existence does not leak."""
    response = post_token(
        module_stack,
        broker,
        "exists-nowhere",
        data={"grant_type": "client_credentials"},
        headers=basic(LIMITED, module_stack.keys.limited),
    )
    assert_oauth_error(response, 400, "unauthorized_client")


def test_unknown_realm_is_invalid_request_for_an_allowed_caller(
    module_stack: Stack, broker: BrokerServer, key: str
) -> None:
    """A realm without credentials in Vault, asked by a caller allowed it: invalid_request."""
    response = post_token(
        module_stack,
        broker,
        "absent-from-vault",
        data={"grant_type": "client_credentials"},
        headers=basic(EVERYTHING, key),
    )
    assert_oauth_error(response, 400, "invalid_request")


@pytest.mark.parametrize("grant", ["password", "authorization_code", "refresh_token"])
def test_other_grants_are_unsupported_grant_type(
    module_stack: Stack, broker: BrokerServer, realm: Realm, key: str, grant: str
) -> None:
    """Any grant but client_credentials: 400 unsupported_grant_type."""
    response = post_token(
        module_stack, broker, realm.name, data={"grant_type": grant}, headers=basic(EVERYTHING, key)
    )
    assert_oauth_error(response, 400, "unsupported_grant_type")


@pytest.mark.parametrize(
    ("case", "body", "extra_headers"),
    [
        ("no grant_type", "", {}),
        ("blank grant_type", "grant_type=", {}),
        (
            "duplicated grant_type",
            "grant_type=client_credentials&grant_type=client_credentials",
            {},
        ),
        ("JSON body", '{"grant_type": "client_credentials"}', {"Content-Type": "application/json"}),
        ("not UTF-8", "grant_type=client_credentials&x=%FF", {}),
        ("body too large", "grant_type=client_credentials&pad=" + "a" * 20000, {}),
        ("min_ttl not a number", "grant_type=client_credentials&min_ttl=soon", {}),
    ],
)
def test_malformed_requests_are_invalid_request(
    module_stack: Stack,
    broker: BrokerServer,
    realm: Realm,
    key: str,
    case: str,
    body: str,
    extra_headers: dict[str, str],
) -> None:
    """A body that is not a single well-formed client-credentials form: invalid_request."""
    response = post_token(
        module_stack,
        broker,
        realm.name,
        data=body,
        headers={**basic(EVERYTHING, key), **extra_headers},
    )
    assert_oauth_error(response, 400, "invalid_request")


def test_basic_and_form_credentials_together_are_invalid_request(
    module_stack: Stack, broker: BrokerServer, realm: Realm, key: str
) -> None:
    """Two client authentication methods in one request (RFC 6749 §2.3): invalid_request."""
    response = post_token(
        module_stack,
        broker,
        realm.name,
        data={"grant_type": "client_credentials", "client_id": EVERYTHING, "client_secret": key},
        headers=basic(EVERYTHING, key),
    )
    body = assert_oauth_error(response, 400, "invalid_request")
    assert key not in str(body)


@pytest.mark.parametrize("raw_realm", ["-leading-dash", "a" * 65, "acme%0A", "%C3%A9t%C3%A9"])
def test_malformed_realm_name_is_invalid_request(
    module_stack: Stack, broker: BrokerServer, key: str, raw_realm: str
) -> None:
    """A realm name outside the realm pattern: invalid_request, not a problem document."""
    response = post_token(
        module_stack,
        broker,
        raw_realm,
        data={"grant_type": "client_credentials"},
        headers=basic(EVERYTHING, key),
    )
    assert_oauth_error(response, 400, "invalid_request")


def test_idp_refusing_the_realm_credentials_is_server_error(
    module_stack: Stack, broker: BrokerServer, key: str
) -> None:
    """A wrong client secret in Vault: 502 server_error, the secret nowhere in the answer."""
    realm = module_stack.new_realm("wrongsecret", in_vault=False)
    module_stack.openbao.write_realm(
        realm.name, {"client_id": realm.client_id, "client_secret": "wrong-dropin-secret"}
    )
    module_stack.leak_watch.add("wrong-dropin-secret")
    response = post_token(
        module_stack,
        broker,
        realm.name,
        data={"grant_type": "client_credentials"},
        headers=basic(EVERYTHING, key),
    )
    body = assert_oauth_error(response, 502, "server_error")
    assert "wrong-dropin-secret" not in str(body)


def test_idp_unreachable_is_temporarily_unavailable_with_retry_after(
    stack: Stack, key: str
) -> None:
    """An IdP nobody listens for: 503 temporarily_unavailable with Retry-After."""
    broker = stack.start_broker(BROKER_IDP_URL=f"http://127.0.0.1:{free_port()}")
    response = post_token(
        stack,
        broker,
        stack.new_realm("noidp").name,
        data={"grant_type": "client_credentials"},
        headers=basic(EVERYTHING, key),
    )
    assert_oauth_error(response, 503, "temporarily_unavailable")
    assert response.headers["retry-after"].isdigit()


# -- discovery and the API description ------------------------------------------------------


def test_discovery_points_clients_at_the_broker(broker: BrokerServer, realm: Realm) -> None:
    """The realm's openid-configuration names the broker's own token endpoint."""
    response = httpx.get(f"{broker.url}/auth/realms/{realm.name}/.well-known/openid-configuration")
    assert 200 == response.status_code
    document = response.json()
    assert {
        "issuer": f"{broker.url}/auth/realms/{realm.name}",
        "token_endpoint": token_url(broker, realm.name),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    } == document


def test_discovery_does_not_reveal_whether_a_realm_exists(broker: BrokerServer) -> None:
    """Discovery answers alike for a realm that exists nowhere, so it reveals nothing."""
    response = httpx.get(f"{broker.url}/auth/realms/no-such-realm/.well-known/openid-configuration")
    assert 200 == response.status_code


def test_authlib_can_use_the_discovered_token_endpoint(
    module_stack: Stack, broker: BrokerServer, realm: Realm, key: str
) -> None:
    """A client that reads discovery first and then fetches a token gets one."""
    document = httpx.get(
        f"{broker.url}/auth/realms/{realm.name}/.well-known/openid-configuration"
    ).json()
    with OAuth2Client(client_id=EVERYTHING, client_secret=key) as client:
        token = client.fetch_token(document["token_endpoint"], grant_type="client_credentials")
    module_stack.leak_watch.add(token["access_token"])
    assert token["expires_at"] > time.time()


def test_openapi_describes_the_endpoint_and_its_errors(broker: BrokerServer) -> None:
    """The OpenAPI document lists the form body and the RFC 6749 error responses."""
    spec = httpx.get(f"{broker.url}/openapi.json").json()
    operation = spec["paths"]["/auth/realms/{realm}/protocol/openid-connect/token"]["post"]
    assert {"200", "400", "401", "429", "502", "503"} <= set(operation["responses"])
    assert "application/x-www-form-urlencoded" in operation["requestBody"]["content"]
    assert "/auth/realms/{realm}/.well-known/openid-configuration" in spec["paths"]
