"""Settings: BROKER_* variables over an optional YAML file, validated into one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from broker.settings import Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No BROKER_* variable of the machine running the tests leaks into them."""
    for name in list(os.environ):
        if name.upper().startswith("BROKER_"):
            monkeypatch.delenv(name)


def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: object) -> Path:
    path = tmp_path / "broker.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    monkeypatch.setenv("BROKER_CONFIG", str(path))
    return path


def settings_error() -> str:
    """The message of the SettingsError that load_settings raises."""
    with pytest.raises(SettingsError) as caught:
        load_settings()
    return str(caught.value)


# --- defaults ----------------------------------------------------------------------------


def test_defaults_match_the_readme_table() -> None:
    """With no variables set, every setting has the default the README's table gives."""
    settings = load_settings()

    assert (
        None,
        None,
        None,
        None,
        None,
        "secret",
        "atlas",
        None,
        "redis://localhost:6379/0",
        "atlas-broker",
        None,
        30,
        300,
    ) == (
        settings.vault_addr,
        settings.vault_token,
        settings.vault_role_id,
        settings.vault_secret_id,
        settings.vault_k8s_role,
        settings.vault_kv_mount,
        settings.vault_prefix,
        settings.idp_url,
        settings.redis_url,
        settings.key_prefix,
        settings.policy_file,
        settings.expiry_skew,
        settings.refresh_before,
    )


def test_default_environment_is_production() -> None:
    """Unless told otherwise, the broker runs with production safeguards."""
    assert "production" == load_settings().env


def test_settings_are_frozen() -> None:
    """Settings cannot be changed once loaded."""
    settings = load_settings()

    with pytest.raises(ValueError, match="frozen"):
        settings.port = 1


# --- sources -----------------------------------------------------------------------------


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each BROKER_* variable sets its setting."""
    monkeypatch.setenv("BROKER_VAULT_ADDR", "https://vault.internal:8200")
    monkeypatch.setenv("BROKER_IDP_URL", "https://sso.example.com")
    monkeypatch.setenv("BROKER_REDIS_URL", "memory://")
    monkeypatch.setenv("BROKER_KEY_PREFIX", "atlas-test")
    monkeypatch.setenv("BROKER_EXPIRY_SKEW", "10")
    monkeypatch.setenv("BROKER_REFRESH_BEFORE", "120")
    monkeypatch.setenv("BROKER_POLICY_FILE", "/etc/broker/policy.yaml")

    settings = load_settings()

    assert (
        "https://vault.internal:8200",
        "https://sso.example.com",
        "memory://",
        "atlas-test",
        10,
        120,
        Path("/etc/broker/policy.yaml"),
    ) == (
        settings.vault_addr,
        settings.idp_url,
        settings.redis_url,
        settings.key_prefix,
        settings.expiry_skew,
        settings.refresh_before,
        settings.policy_file,
    )


def test_secrets_are_secret_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Vault token is held as a SecretStr, so it cannot reach a repr or a log line."""
    monkeypatch.setenv("BROKER_VAULT_TOKEN", "hvs.real-looking-token")

    settings = load_settings()

    assert (False, "hvs.real-looking-token") == (
        "hvs.real-looking-token" in repr(settings),
        settings.vault_token.get_secret_value() if settings.vault_token else None,
    )


def test_trailing_slash_of_urls_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """URLs are kept without a trailing slash, so paths join cleanly."""
    monkeypatch.setenv("BROKER_IDP_URL", "https://sso.example.com/")

    assert "https://sso.example.com" == load_settings().idp_url


def test_memory_url_selects_the_embedded_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """BROKER_REDIS_URL=memory:// selects the single-process store."""
    monkeypatch.setenv("BROKER_REDIS_URL", "memory://")

    assert load_settings().uses_memory_store


def test_yaml_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A YAML file named by BROKER_CONFIG provides settings."""
    config_file(tmp_path, monkeypatch, {"port": 9000, "idp_url": "https://sso.example.com"})

    settings = load_settings()

    assert (9000, "https://sso.example.com") == (settings.port, settings.idp_url)


def test_environment_wins_over_the_yaml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A variable set in the environment beats the same setting in the file."""
    config_file(tmp_path, monkeypatch, {"port": 9000, "key_prefix": "from-file"})
    monkeypatch.setenv("BROKER_PORT", "9100")

    settings = load_settings()

    assert (9100, "from-file") == (settings.port, settings.key_prefix)


def test_empty_yaml_file_means_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty config file is allowed and changes nothing."""
    config_file(tmp_path, monkeypatch, "")

    assert 8080 == load_settings().port


def test_missing_config_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A BROKER_CONFIG naming no file stops start-up with a message naming BROKER_CONFIG."""
    monkeypatch.setenv("BROKER_CONFIG", str(tmp_path / "absent.yaml"))

    assert settings_error().startswith("BROKER_CONFIG:")


def test_unparsable_config_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config file that is not YAML stops start-up with a one-line BROKER_CONFIG error."""
    config_file(tmp_path, monkeypatch, "port: [8080\n")

    assert settings_error().startswith("BROKER_CONFIG:")


def test_config_file_that_is_not_a_mapping_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config file holding a list, not a mapping, stops start-up with a SettingsError."""
    config_file(tmp_path, monkeypatch, "- port\n- 8080\n")

    assert settings_error().startswith("BROKER_CONFIG:")


# --- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BROKER_PORT", "70000"),
        ("BROKER_PORT", "eighty"),
        ("BROKER_PORT", "-1"),
        ("BROKER_WORKERS", "0"),
        ("BROKER_ENV", "staging"),
        ("BROKER_LOG_LEVEL", "loud"),
        ("BROKER_EXPIRY_SKEW", "-1"),
        ("BROKER_EXPIRY_SKEW", "thirty"),
        ("BROKER_REFRESH_BEFORE", "99999"),
        ("BROKER_KEY_PREFIX", "has space"),
        ("BROKER_KEY_PREFIX", ""),
        ("BROKER_REDIS_URL", "http://localhost:6379"),
        ("BROKER_IDP_URL", "sso.example.com"),
        ("BROKER_VAULT_ADDR", "vault:8200"),
        ("BROKER_VAULT_ADDR", "file:///etc/passwd"),
        ("BROKER_VAULT_TIMEOUT", "0"),
    ],
)
def test_invalid_value_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """An invalid value stops start-up with one line that starts with the variable's name."""
    monkeypatch.setenv(name, value)

    message = settings_error()

    assert (True, False) == (message.startswith(f"{name}:"), "\n" in message)


def test_invalid_value_from_the_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An invalid value in the YAML file is refused like one from the environment."""
    config_file(tmp_path, monkeypatch, {"port": "eighty"})

    assert settings_error().startswith("BROKER_PORT:")


def test_unknown_key_in_the_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misspelt setting in the YAML file stops start-up instead of being ignored."""
    config_file(tmp_path, monkeypatch, {"expiry_skwe": 10})

    assert "Extra inputs are not permitted" in settings_error()


def test_non_http_vault_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Vault address must be an http:// or https:// URL."""
    monkeypatch.setenv("BROKER_VAULT_ADDR", "tcp://vault:8200")

    assert settings_error().startswith("BROKER_VAULT_ADDR: ")


@pytest.mark.parametrize("placeholder", ["changeme", "root", "CHANGEME", "secret"])
def test_placeholder_vault_token_is_refused_outside_dev(
    monkeypatch: pytest.MonkeyPatch, placeholder: str
) -> None:
    """A placeholder Vault token stops a production start-up."""
    monkeypatch.setenv("BROKER_VAULT_TOKEN", placeholder)

    assert "BROKER_VAULT_TOKEN" in settings_error()


def test_placeholder_approle_secret_is_refused_outside_dev(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A placeholder AppRole secret id stops a production start-up."""
    monkeypatch.setenv("BROKER_VAULT_ROLE_ID", "broker")
    monkeypatch.setenv("BROKER_VAULT_SECRET_ID", "changeme")

    assert "BROKER_VAULT_SECRET_ID" in settings_error()


def test_placeholder_error_starts_with_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The placeholder refusal starts with the variable's name, like every other error."""
    monkeypatch.setenv("BROKER_VAULT_TOKEN", "changeme")

    assert settings_error().startswith("BROKER_VAULT_TOKEN:")


def test_placeholder_error_does_not_echo_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal names the variable, not the secret it holds."""
    monkeypatch.setenv("BROKER_VAULT_TOKEN", "changeme")

    assert "changeme" not in settings_error().lower()


def test_placeholder_vault_token_is_accepted_in_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    """In the dev environment a placeholder Vault token is accepted."""
    monkeypatch.setenv("BROKER_ENV", "dev")
    monkeypatch.setenv("BROKER_VAULT_TOKEN", "root")

    settings = load_settings()

    assert "root" == (settings.vault_token.get_secret_value() if settings.vault_token else None)


def test_real_vault_token_is_accepted_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    """A token that is not a placeholder passes the production check."""
    monkeypatch.setenv("BROKER_VAULT_TOKEN", "hvs.CAESIJ3k2l")

    assert isinstance(load_settings(), Settings)


# --- IdP origins -------------------------------------------------------------------------


def test_allowed_idp_origins_are_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    """BROKER_IDP_ALLOWED_ORIGINS is a comma list; with BROKER_IDP_URL's origin it makes
    the set realm URLs may use (case and default ports normalised)."""
    monkeypatch.setenv("BROKER_IDP_URL", "https://SSO.example.com:443/base")
    monkeypatch.setenv("BROKER_IDP_ALLOWED_ORIGINS", "https://b.example.com:8443, http://a.test")

    assert (
        frozenset({"https://sso.example.com", "https://b.example.com:8443", "http://a.test"})
        == load_settings().allowed_idp_origins
    )


@pytest.mark.parametrize(
    "value", ["https://idp.test/auth", "ftp://idp.test", "idp.test", "https://u:p@idp.test"]
)
def test_allowed_idp_origin_that_is_not_an_origin_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """An entry that is not scheme://host[:port] is refused with one line naming the
    variable."""
    monkeypatch.setenv("BROKER_IDP_ALLOWED_ORIGINS", value)

    message = settings_error()

    assert message.startswith("BROKER_IDP_ALLOWED_ORIGINS: ")
    assert "\n" not in message
    assert "u:p" not in message


# --- the listener's trust settings ---------------------------------------------------------


def test_trusted_proxies_are_parsed_as_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    """BROKER_TRUSTED_PROXIES takes comma-separated addresses and CIDRs."""
    monkeypatch.setenv("BROKER_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7,fd00::/8")
    assert ["10.0.0.0/8", "192.0.2.7/32", "fd00::/8"] == [
        str(network) for network in load_settings().trusted_proxy_networks
    ]


def test_a_trusted_proxy_that_is_no_address_stops_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A malformed entry is a one-line error naming the setting and the entry."""
    monkeypatch.setenv("BROKER_TRUSTED_PROXIES", "10.0.0.0/8,proxy.internal")
    message = settings_error()
    assert "BROKER_TRUSTED_PROXIES" in message
    assert "proxy.internal" in message


def test_a_tls_certificate_needs_its_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """BROKER_TLS_CERT_FILE without BROKER_TLS_KEY_FILE stops start-up."""
    cert = tmp_path / "tls.crt"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("BROKER_TLS_CERT_FILE", str(cert))
    assert "BROKER_TLS_KEY_FILE" in settings_error()


def test_docs_are_off_by_default() -> None:
    """The documentation page is served only when asked for."""
    assert Settings().docs is False


# --- real identity providers -------------------------------------------------------------


def test_keycloak17_realm_path_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    """BROKER_IDP_REALM_PATH=/realms/{realm} selects Keycloak 17's layout."""
    monkeypatch.setenv("BROKER_IDP_REALM_PATH", "/realms/{realm}")

    assert load_settings().idp_realm_path == "/realms/{realm}"


@pytest.mark.parametrize("value", ["/realms/acme", "realms/{realm}", "/realms/{realm}?x=1"])
def test_realm_path_without_placeholder_or_slash_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """A realm path must start with / and hold {realm}, and nothing but path characters."""
    monkeypatch.setenv("BROKER_IDP_REALM_PATH", value)

    assert settings_error().startswith("BROKER_IDP_REALM_PATH: ")


def test_unknown_verify_default_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """BROKER_IDP_VERIFY is one of auto, jwks and none."""
    monkeypatch.setenv("BROKER_IDP_VERIFY", "sometimes")

    assert settings_error().startswith("BROKER_IDP_VERIFY: ")
