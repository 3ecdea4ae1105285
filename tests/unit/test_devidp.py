"""The development IdP speaks Keycloak's client-credentials protocol and misbehaves on request."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import subprocess
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from atlas_broker_dev.idp import DevClient, IdPConfig, create_idp_app
from polling import eventually, wait_for

BASE_URL = "http://idp.test"
TOKEN_URL = "/auth/realms/acme/protocol/openid-connect/token"
CLIENT_ID = "atlas-acme"
SECRET = "s3cret-acme-value"
GRANT = {"grant_type": "client_credentials"}


def basic(client_id: str = CLIENT_ID, secret: str = SECRET) -> dict[str, str]:
    """An RFC 7617 Basic header exactly as the Atlas documentation builds it."""
    encoded = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


def idp_client(*clients: DevClient, **options: Any) -> httpx.AsyncClient:
    """A client for a fresh IdP whose realm acme has ``clients`` (default: the one above)."""
    config = IdPConfig(clients={"acme": list(clients or [DevClient(CLIENT_ID, SECRET)])}, **options)
    transport = httpx.ASGITransport(app=create_idp_app(config))
    return httpx.AsyncClient(transport=transport, base_url=BASE_URL)


@pytest.fixture
async def idp() -> AsyncIterator[httpx.AsyncClient]:
    async with idp_client() as client:
        yield client


def unverified(token: str) -> Any:
    return jwt.decode(token, options={"verify_signature": False})


async def token_response(idp: httpx.AsyncClient, realm: str = "acme") -> httpx.Response:
    url = f"/auth/realms/{realm}/protocol/openid-connect/token"
    return await idp.post(url, data=GRANT, headers=basic())


async def token_requests(idp: httpx.AsyncClient, realm: str = "acme") -> int:
    counts: dict[str, int] = (await idp.get("/_dev/stats")).json()["token_requests"]
    return counts.get(realm, 0)


async def verified_claims(idp: httpx.AsyncClient, token: str, realm: str = "acme") -> Any:
    jwks = (await idp.get(f"/auth/realms/{realm}/protocol/openid-connect/certs")).json()
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    return jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience="account",
        issuer=f"{BASE_URL}/auth/realms/{realm}",
    )


async def set_fault(idp: httpx.AsyncClient, **fault: Any) -> None:
    response = await idp.put("/_dev/faults", json=fault)
    assert response.status_code == 200, response.text


# --- the token endpoint ------------------------------------------------------------------


async def test_basic_request_yields_jwt_verified_by_jwks(idp: httpx.AsyncClient) -> None:
    """A Basic-authenticated request gets a JWT that verifies against the realm's JWKS."""
    response = await token_response(idp)

    assert response.status_code == 200
    body = response.json()
    assert (
        body["token_type"],
        body["expires_in"],
        body["refresh_expires_in"],
        body["not-before-policy"],
    ) == ("Bearer", 3600, 0, 0)
    claims = await verified_claims(idp, body["access_token"])
    assert (claims["azp"], claims["typ"], claims["scope"]) == (CLIENT_ID, "Bearer", body["scope"])


async def test_token_exp_is_iat_plus_lifetime(idp: httpx.AsyncClient) -> None:
    """The token's exp is its iat plus the configured lifetime."""
    token = (await token_response(idp)).json()["access_token"]

    claims = await verified_claims(idp, token)

    assert claims["iat"] + 3600 == claims["exp"]
    assert abs(claims["iat"] - time.time()) < 5


async def test_token_response_is_not_cacheable(idp: httpx.AsyncClient) -> None:
    """A token response carries Cache-Control: no-store (RFC 6749 §5.1)."""
    response = await token_response(idp)

    assert response.headers["cache-control"] == "no-store"


async def test_client_secret_post_is_accepted(idp: httpx.AsyncClient) -> None:
    """Credentials in the form body (client_secret_post) work like Basic."""
    form = {**GRANT, "client_id": CLIENT_ID, "client_secret": SECRET}

    response = await idp.post(TOKEN_URL, data=form)

    assert response.status_code == 200
    assert (await verified_claims(idp, response.json()["access_token"]))["azp"] == CLIENT_ID


async def test_basic_credentials_are_form_urldecoded() -> None:
    """Basic id and secret are form-urldecoded after base64, as RFC 6749 §2.3.1 requires."""
    client_id, secret = "client:one", "p@ss:w rd+%/é"
    pair = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(secret)}"
    headers = {"Authorization": f"Basic {base64.b64encode(pair.encode()).decode()}"}
    async with idp_client(DevClient(client_id, secret)) as idp:
        response = await idp.post(TOKEN_URL, data=GRANT, headers=headers)

    assert response.status_code == 200


async def test_every_token_is_unique(idp: httpx.AsyncClient) -> None:
    """Two tokens issued in the same second differ, because each has a new jti."""
    first = (await token_response(idp)).json()["access_token"]
    second = (await token_response(idp)).json()["access_token"]

    assert first != second


async def test_subject_is_stable_per_client(idp: httpx.AsyncClient) -> None:
    """The same client always gets the same sub."""
    first = unverified((await token_response(idp)).json()["access_token"])
    second = unverified((await token_response(idp)).json()["access_token"])

    assert first["sub"] == second["sub"]


async def test_issuer_base_overrides_request_url() -> None:
    """A configured issuer_base, not the request's URL, goes into iss."""
    async with idp_client(issuer_base="https://sso.example.com/") as idp:
        token = (await token_response(idp)).json()["access_token"]

    assert unverified(token)["iss"] == "https://sso.example.com/auth/realms/acme"


async def test_requested_scope_outside_client_scope_is_refused() -> None:
    """A client with a scope may not request scopes outside it (400 invalid_scope)."""
    async with idp_client(DevClient(CLIENT_ID, SECRET, scope="read write")) as idp:
        response = await idp.post(TOKEN_URL, data={**GRANT, "scope": "admin"}, headers=basic())

    assert (response.status_code, response.json()["error"]) == (400, "invalid_scope")


async def test_requested_scope_is_granted(idp: httpx.AsyncClient) -> None:
    """A requested scope is echoed in the response and the token."""
    response = await idp.post(TOKEN_URL, data={**GRANT, "scope": "read"}, headers=basic())

    body = response.json()
    assert (
        body["scope"],
        (await verified_claims(idp, body["access_token"]))["scope"],
    ) == ("read", "read")


# --- refusals ----------------------------------------------------------------------------


async def test_wrong_secret_is_invalid_client_with_basic_challenge(idp: httpx.AsyncClient) -> None:
    """A wrong secret over Basic gives 401 invalid_client and a Basic challenge."""
    response = await idp.post(TOKEN_URL, data=GRANT, headers=basic(secret="wrong"))

    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")
    assert response.headers["www-authenticate"] == 'Basic realm="acme"'


async def test_wrong_secret_in_form_is_invalid_client(idp: httpx.AsyncClient) -> None:
    """A wrong client_secret_post secret gives 401 invalid_client without a Basic challenge."""
    form = {**GRANT, "client_id": CLIENT_ID, "client_secret": "wrong"}

    response = await idp.post(TOKEN_URL, data=form)

    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")
    assert "www-authenticate" not in response.headers


async def test_unknown_client_is_invalid_client(idp: httpx.AsyncClient) -> None:
    """An unknown client id gives 401 invalid_client."""
    response = await idp.post(TOKEN_URL, data=GRANT, headers=basic(client_id="nobody"))

    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")


async def test_missing_credentials_are_invalid_client(idp: httpx.AsyncClient) -> None:
    """A request without any client authentication gives 401 invalid_client."""
    response = await idp.post(TOKEN_URL, data=GRANT)

    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")


@pytest.mark.parametrize("credentials", ["%%%not-base64", base64.b64encode(b"no-colon").decode()])
async def test_malformed_basic_header_is_invalid_client(
    idp: httpx.AsyncClient, credentials: str
) -> None:
    """A Basic header that is not base64 of id:secret gives 401 invalid_client."""
    headers = {"Authorization": f"Basic {credentials}"}

    response = await idp.post(TOKEN_URL, data=GRANT, headers=headers)

    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")


async def test_unknown_realm_is_404_like_keycloak(idp: httpx.AsyncClient) -> None:
    """A token request for an unknown realm gives Keycloak's 404 Realm does not exist."""
    response = await token_response(idp, realm="nowhere")

    assert (response.status_code, response.json()) == (404, {"error": "Realm does not exist"})


async def test_other_grant_type_is_unsupported(idp: httpx.AsyncClient) -> None:
    """A grant type other than client_credentials gives 400 unsupported_grant_type."""
    response = await idp.post(TOKEN_URL, data={"grant_type": "password"}, headers=basic())

    assert (response.status_code, response.json()["error"]) == (400, "unsupported_grant_type")


async def test_missing_grant_type_is_invalid_request(idp: httpx.AsyncClient) -> None:
    """A request without grant_type gives 400 invalid_request."""
    response = await idp.post(TOKEN_URL, data={}, headers=basic())

    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


async def test_json_body_is_invalid_request(idp: httpx.AsyncClient) -> None:
    """A JSON body instead of a form gives 400 invalid_request."""
    response = await idp.post(TOKEN_URL, json=GRANT, headers=basic())

    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


async def test_two_authentication_methods_are_invalid_request(idp: httpx.AsyncClient) -> None:
    """Basic plus a client_secret in the body is refused (RFC 6749 §2.3: use only one)."""
    response = await idp.post(TOKEN_URL, data={**GRANT, "client_secret": SECRET}, headers=basic())

    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


# --- discovery ---------------------------------------------------------------------------


async def test_jwks_publishes_one_rs256_signing_key(idp: httpx.AsyncClient) -> None:
    """The certs endpoint lists the realm's one RSA signing key."""
    keys = (await idp.get("/auth/realms/acme/protocol/openid-connect/certs")).json()["keys"]

    assert [(key["kty"], key["use"], key["alg"], key["e"]) for key in keys] == [
        ("RSA", "sig", "RS256", "AQAB")
    ]


async def test_realms_have_distinct_keys(idp: httpx.AsyncClient) -> None:
    """Each realm signs with its own key."""
    await idp.put("/_dev/realms/globex/clients/atlas-globex", json={"client_secret": "g"})

    kids = [
        (await idp.get(f"/auth/realms/{realm}/protocol/openid-connect/certs")).json()["keys"][0][
            "kid"
        ]
        for realm in ("acme", "globex")
    ]

    assert kids[0] != kids[1]


async def test_discovery_document_points_at_the_realm(idp: httpx.AsyncClient) -> None:
    """The OpenID configuration names the realm's issuer, token endpoint and JWKS."""
    document = (await idp.get("/auth/realms/acme/.well-known/openid-configuration")).json()

    issuer = f"{BASE_URL}/auth/realms/acme"
    assert document == {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/protocol/openid-connect/token",
        "jwks_uri": f"{issuer}/protocol/openid-connect/certs",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }


async def test_discovery_of_unknown_realm_is_404(idp: httpx.AsyncClient) -> None:
    """Discovery and certs of an unknown realm give 404."""
    statuses = [
        (await idp.get(f"/auth/realms/nowhere/{path}")).status_code
        for path in (".well-known/openid-configuration", "protocol/openid-connect/certs")
    ]

    assert statuses == [404, 404]


# --- development controls ----------------------------------------------------------------


async def test_stats_count_every_token_request_per_realm(idp: httpx.AsyncClient) -> None:
    """Stats count token requests per realm, refused ones included, and issued tokens."""
    await token_response(idp)
    await idp.post(TOKEN_URL, data=GRANT, headers=basic(secret="wrong"))
    await token_response(idp, realm="nowhere")

    stats = (await idp.get("/_dev/stats")).json()

    assert stats == {
        "token_requests": {"acme": 2, "nowhere": 1},
        "token_requests_total": 3,
        "tokens_issued": {"acme": 1},
        "tokens_issued_total": 1,
        "discovery_requests": {},
        "token_hosts": {"acme": {"idp.test": 2}, "nowhere": {"idp.test": 1}},
    }


async def test_stats_reset_zeroes_counters(idp: httpx.AsyncClient) -> None:
    """POST /_dev/stats/reset zeroes every counter."""
    await token_response(idp)

    await idp.post("/_dev/stats/reset")

    stats = (await idp.get("/_dev/stats")).json()
    assert (stats["token_requests_total"], stats["token_requests"]) == (0, {})


async def test_rotated_secret_replaces_the_old_one(idp: httpx.AsyncClient) -> None:
    """After a secret is rotated via /_dev the old one fails and the new one works."""
    await idp.put(f"/_dev/realms/acme/clients/{CLIENT_ID}", json={"client_secret": "rotated"})

    old = await idp.post(TOKEN_URL, data=GRANT, headers=basic())
    new = await idp.post(TOKEN_URL, data=GRANT, headers=basic(secret="rotated"))

    assert (old.status_code, new.status_code) == (401, 200)


async def test_put_client_creates_a_realm(idp: httpx.AsyncClient) -> None:
    """Putting a client into an unknown realm creates the realm with its own key."""
    response = await idp.put(
        "/_dev/realms/globex/clients/atlas-globex", json={"client_secret": "g"}
    )

    token = await idp.post(
        "/auth/realms/globex/protocol/openid-connect/token",
        data=GRANT,
        headers=basic("atlas-globex", "g"),
    )
    assert (response.status_code, response.json()["created"]) == (200, True)
    assert "g" not in response.json().values()
    claims = await verified_claims(idp, token.json()["access_token"], realm="globex")
    assert claims["azp"] == "atlas-globex"


async def test_deleted_client_is_invalid_client(idp: httpx.AsyncClient) -> None:
    """A client deleted via /_dev can no longer get tokens."""
    deleted = await idp.delete(f"/_dev/realms/acme/clients/{CLIENT_ID}")

    response = await token_response(idp)

    assert (deleted.status_code, response.status_code) == (204, 401)


async def test_token_lifetime_can_be_changed(idp: httpx.AsyncClient) -> None:
    """PUT /_dev/config token_lifetime changes expires_in and exp of later tokens."""
    await idp.put("/_dev/config", json={"token_lifetime": 120})

    body = (await token_response(idp)).json()

    claims = await verified_claims(idp, body["access_token"])
    assert (body["expires_in"], claims["exp"] - claims["iat"]) == (120, 120)


async def test_admin_token_guards_dev_endpoints() -> None:
    """With an admin token configured, /_dev needs it as a Bearer credential."""
    async with idp_client(admin_token="let-me-in") as idp:
        without = await idp.get("/_dev/stats")
        wrong = await idp.get("/_dev/stats", headers={"Authorization": "Bearer nope"})
        right = await idp.get("/_dev/stats", headers={"Authorization": "Bearer let-me-in"})

    assert (without.status_code, wrong.status_code, right.status_code) == (401, 401, 200)


async def test_unknown_fault_mode_is_rejected(idp: httpx.AsyncClient) -> None:
    """An unknown fault mode, or a delay without seconds, is a 422."""
    unknown = await idp.put("/_dev/faults", json={"mode": "explode"})
    no_seconds = await idp.put("/_dev/faults", json={"mode": "delay"})

    assert (unknown.status_code, no_seconds.status_code) == (422, 422)


# --- faults ------------------------------------------------------------------------------


async def test_fault_status_500(idp: httpx.AsyncClient) -> None:
    """status_500 answers 500 with a JSON error body."""
    await set_fault(idp, mode="status_500")

    response = await token_response(idp)

    assert (response.status_code, response.json()["error"]) == (500, "unknown_error")


async def test_fault_html(idp: httpx.AsyncClient) -> None:
    """html answers 200 with an HTML page."""
    await set_fault(idp, mode="html")

    response = await token_response(idp)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")


async def test_fault_garbage(idp: httpx.AsyncClient) -> None:
    """garbage answers 200 application/json with a body that is not JSON."""
    await set_fault(idp, mode="garbage")

    response = await token_response(idp)

    assert (response.status_code, response.headers["content-type"]) == (200, "application/json")
    with pytest.raises(json.JSONDecodeError):
        response.json()


async def test_fault_no_access_token(idp: httpx.AsyncClient) -> None:
    """no_access_token answers 200 JSON without an access_token."""
    await set_fault(idp, mode="no_access_token")

    body = (await token_response(idp)).json()

    assert "access_token" not in body
    assert body["token_type"] == "Bearer"


async def test_fault_wrong_token_type(idp: httpx.AsyncClient) -> None:
    """wrong_token_type answers token_type mac."""
    await set_fault(idp, mode="wrong_token_type")

    body = (await token_response(idp)).json()

    assert body["token_type"] == "mac"


async def test_fault_expired(idp: httpx.AsyncClient) -> None:
    """expired hands out a correctly signed token whose exp is in the past."""
    await set_fault(idp, mode="expired")
    token = (await token_response(idp)).json()["access_token"]

    with pytest.raises(jwt.ExpiredSignatureError):
        await verified_claims(idp, token)


async def test_fault_bad_signature(idp: httpx.AsyncClient) -> None:
    """bad_signature hands out a token whose signature does not verify."""
    await set_fault(idp, mode="bad_signature")
    token = (await token_response(idp)).json()["access_token"]

    with pytest.raises(jwt.InvalidSignatureError):
        await verified_claims(idp, token)


async def test_fault_alg_none(idp: httpx.AsyncClient) -> None:
    """alg_none hands out an unsigned JWT with alg none."""
    await set_fault(idp, mode="alg_none")
    token = (await token_response(idp)).json()["access_token"]

    assert (jwt.get_unverified_header(token)["alg"], token.rsplit(".", 1)[1]) == ("none", "")
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(token, "irrelevant", algorithms=["RS256"])


async def test_fault_foreign_issuer(idp: httpx.AsyncClient) -> None:
    """foreign_issuer hands out a validly signed token naming another realm as issuer."""
    await set_fault(idp, mode="foreign_issuer")
    token = (await token_response(idp)).json()["access_token"]

    with pytest.raises(jwt.InvalidIssuerError):
        await verified_claims(idp, token)


async def test_fault_hang_never_answers(idp: httpx.AsyncClient) -> None:
    """hang does not answer within a client's timeout."""
    await set_fault(idp, mode="hang")

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(token_response(idp), timeout=0.2)


async def test_fault_hang_does_not_block_other_requests(idp: httpx.AsyncClient) -> None:
    """A hanging token request leaves the IdP free to answer others."""
    await set_fault(idp, mode="hang", count=1)
    hanging = asyncio.create_task(token_response(idp))
    await eventually(lambda: token_requests(idp), message="the hanging request never arrived")

    response = await token_response(idp)

    assert (response.status_code, hanging.done()) == (200, False)
    hanging.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await hanging


async def test_fault_delay_answers_correctly_later(idp: httpx.AsyncClient) -> None:
    """delay answers with a valid token after the given seconds."""
    await set_fault(idp, mode="delay", seconds=0.2)
    started = time.monotonic()

    response = await token_response(idp)

    assert time.monotonic() - started >= 0.2
    assert (await verified_claims(idp, response.json()["access_token"]))["azp"] == CLIENT_ID


async def test_fault_for_one_realm_spares_others(idp: httpx.AsyncClient) -> None:
    """A fault scoped to one realm leaves the other realms working."""
    await idp.put("/_dev/realms/globex/clients/atlas-acme", json={"client_secret": SECRET})
    await set_fault(idp, mode="status_500", realm="globex")

    statuses = [(await token_response(idp, realm)).status_code for realm in ("acme", "globex")]

    assert statuses == [200, 500]


async def test_fault_with_count_clears_itself(idp: httpx.AsyncClient) -> None:
    """A fault with a count affects only that many token requests."""
    await set_fault(idp, mode="status_500", count=2)

    statuses = [(await token_response(idp)).status_code for _ in range(3)]

    assert statuses == [500, 500, 200]


async def test_cleared_faults_restore_normal_answers(idp: httpx.AsyncClient) -> None:
    """DELETE /_dev/faults makes the token endpoint behave again."""
    await set_fault(idp, mode="status_500")

    await idp.delete("/_dev/faults")

    assert (await token_response(idp)).status_code == 200


async def test_faulted_requests_are_counted(idp: httpx.AsyncClient) -> None:
    """Requests answered by a fault still count in the stats."""
    await set_fault(idp, mode="html")
    await token_response(idp)

    stats = (await idp.get("/_dev/stats")).json()

    assert (stats["token_requests"], stats["tokens_issued"]) == ({"acme": 1}, {})


# --- configuration and logging -----------------------------------------------------------


def test_config_from_yaml(tmp_path: Path) -> None:
    """The YAML file's realms, clients and lifetime become an IdPConfig."""
    path = tmp_path / "idp.yaml"
    path.write_text(
        "token_lifetime: 60\n"
        "realms:\n"
        "  acme:\n"
        "    clients:\n"
        "      - client_id: atlas-acme\n"
        "        client_secret: s3cret\n"
        "        scope: read\n"
    )

    config = IdPConfig.from_yaml(path)

    assert config == IdPConfig(
        clients={"acme": [DevClient("atlas-acme", "s3cret", "read")]}, token_lifetime=60
    )


def test_config_errors_do_not_reveal_secrets() -> None:
    """An invalid configuration is refused without quoting its secret."""
    data = {
        "realms": {"acme": {"clients": [{"client_id": "a", "client_secret": "hunter2", "x": 1}]}}
    }

    with pytest.raises(ValueError, match="unknown keys") as error:
        IdPConfig.from_dict(data)

    assert "hunter2" not in str(error.value)


def test_client_repr_hides_secret() -> None:
    """A DevClient's repr never shows its secret."""
    assert "hunter2" not in repr(DevClient("a", "hunter2"))


async def test_logs_never_contain_secrets_or_tokens(
    idp: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither secrets nor tokens appear in log lines, even in a query string."""
    with caplog.at_level(logging.DEBUG):
        token = (await token_response(idp)).json()["access_token"]
        await idp.post(f"{TOKEN_URL}?client_secret={SECRET}", data=GRANT, headers=basic(secret="x"))
        await idp.put(
            f"/_dev/realms/acme/clients/{CLIENT_ID}", json={"client_secret": "new-s3cret"}
        )

    ours = "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith("atlas_broker_dev.idp")
    )
    assert ours
    assert not [text for text in (SECRET, token, "new-s3cret") if text in ours]


# --- the process -------------------------------------------------------------------------


def test_module_serves_on_a_free_port(tmp_path: Path) -> None:
    """python -m atlas_broker_dev.idp --port 0 writes its port and answers real HTTP on loopback."""
    config = tmp_path / "idp.yaml"
    config.write_text(
        f"realms:\n  acme:\n    clients:\n      - client_id: {CLIENT_ID}\n"
        f"        client_secret: {SECRET}\n"
    )
    port_file, log = tmp_path / "port", tmp_path / "idp.log"
    command = [sys.executable, "-m", "atlas_broker_dev.idp", "--host", "127.0.0.1", "--port", "0"]
    command += ["--config", str(config), "--token-lifetime", "90", "--port-file", str(port_file)]
    with log.open("w") as stderr, subprocess.Popen(command, stderr=stderr) as process:
        try:
            wait_for(
                lambda: port_file.exists() or process.poll() is not None,
                timeout=20,
                message="the IdP wrote no port file",
            )
            base = f"http://127.0.0.1:{int(port_file.read_text())}"
            response = httpx.post(f"{base}{TOKEN_URL}", data=GRANT, headers=basic(), timeout=5)
        finally:
            process.terminate()
            process.wait(timeout=10)

    body = response.json()
    assert (response.status_code, body["expires_in"]) == (200, 90)
    assert unverified(body["access_token"])["iss"] == f"{base}/auth/realms/acme"
    assert not [text for text in (SECRET, body["access_token"]) if text in log.read_text()]


# --- scopes per client -------------------------------------------------------------------

REPORTS = DevClient(CLIENT_ID, SECRET, scopes=("reports.read", "reports.write"))


async def test_requested_subset_of_client_scopes_is_granted() -> None:
    """A request for some of a client's scopes gets a token with exactly those."""
    async with idp_client(REPORTS) as idp:
        response = await idp.post(
            TOKEN_URL, data={**GRANT, "scope": "reports.read"}, headers=basic()
        )
        body = response.json()
        claims = await verified_claims(idp, body["access_token"])

    assert (body["scope"], claims["scope"]) == ("reports.read", "reports.read")


async def test_scope_outside_client_scopes_is_invalid_scope() -> None:
    """A request naming a scope outside the client's list is 400 invalid_scope."""
    async with idp_client(REPORTS) as idp:
        response = await idp.post(
            TOKEN_URL, data={**GRANT, "scope": "reports.read admin"}, headers=basic()
        )

    assert (response.status_code, response.json()["error"]) == (400, "invalid_scope")


async def test_client_with_scopes_gets_default_scope_without_request() -> None:
    """A request naming no scope gets the default token, not the client's whole list."""
    async with idp_client(REPORTS) as idp:
        body = (await token_response(idp)).json()

    assert body["scope"] == "profile email"


async def test_control_endpoint_sets_client_scopes(idp: httpx.AsyncClient) -> None:
    """A client put through /_dev with scopes is held to them."""
    put = await idp.put(
        f"/_dev/realms/acme/clients/{CLIENT_ID}",
        json={"client_secret": SECRET, "scopes": ["reports.read"]},
    )
    refused = await idp.post(TOKEN_URL, data={**GRANT, "scope": "reports.write"}, headers=basic())

    assert (put.json()["scopes"], refused.json()["error"]) == (["reports.read"], "invalid_scope")


def test_config_reads_client_scopes() -> None:
    """A client's scopes list in the configuration becomes its allowed scopes."""
    data = {
        "realms": {
            "acme": {"clients": [{"client_id": "a", "client_secret": "s", "scopes": ["x.read"]}]}
        }
    }

    config = IdPConfig.from_dict(data)

    assert config.clients["acme"][0].allowed_scopes() == frozenset({"x.read"})
