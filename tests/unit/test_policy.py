"""Caller policy: authorization as data, keys looked up by hash, a file reloaded on change."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.adapters.policy_file import PolicyFile
from broker.core.policy import Caller, Policy, PolicyError, WorkloadIdentity, hash_key

BILLING_KEY = "billing-key-0123456789abcdef"
AUDIT_KEY = "audit-key-0123456789abcdef"


def caller(*, realms: tuple[str, ...] = (), roles: tuple[str, ...] = ()) -> Caller:
    return Caller("svc", frozenset(realms), frozenset(roles))


def entry(name: str, key: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "api_key_sha256": hash_key(key), **fields}


def policy_error(data: dict[str, Any]) -> str:
    with pytest.raises(PolicyError) as caught:
        Policy.from_mapping(data)
    return str(caught.value)


# --- authorization -----------------------------------------------------------------------


def test_caller_may_use_a_listed_realm() -> None:
    """A caller whose realms list acme may use acme."""
    assert caller(realms=("acme",)).may_use("acme")


def test_caller_may_not_use_an_unlisted_realm() -> None:
    """A caller whose realms list acme may not use globex."""
    assert not caller(realms=("acme",)).may_use("globex")


def test_caller_without_realms_may_use_none() -> None:
    """A caller with no realms (an auditor, say) may use no realm."""
    assert not caller(roles=("auditor",)).may_use("acme")


def test_wildcard_allows_any_realm() -> None:
    """A caller with realms ["*"] may use any realm."""
    assert caller(realms=("*",)).may_use("anything-at-all")


def test_realm_match_is_exact() -> None:
    """A realm is matched as a whole name, not as a prefix or case-insensitively."""
    allowed = caller(realms=("acme",))

    assert (False, False) == (allowed.may_use("acme-prod"), allowed.may_use("ACME"))


def test_admin_implies_auditor() -> None:
    """An admin has the auditor role too."""
    assert caller(roles=("admin",)).has_role("auditor")


def test_auditor_does_not_imply_admin() -> None:
    """An auditor is not an admin."""
    assert not caller(roles=("auditor",)).has_role("admin")


def test_caller_without_roles_has_none() -> None:
    """A plain caller is neither auditor nor admin."""
    plain = caller(realms=("acme",))

    assert (False, False) == (plain.has_role("auditor"), plain.has_role("admin"))


# --- lookup ------------------------------------------------------------------------------


def test_hash_key_is_sha256_hex() -> None:
    """A key's hash is its SHA-256 in lower-case hex."""
    assert "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" == hash_key("test")


def test_key_finds_its_caller() -> None:
    """The right API key finds the caller whose api_key_sha256 is its hash."""
    policy = Policy.from_mapping({"callers": [entry("billing-api", BILLING_KEY, realms=["acme"])]})

    assert Caller("billing-api", frozenset({"acme"}), frozenset()) == policy.caller_for_key(
        BILLING_KEY
    )


def test_wrong_key_finds_no_caller() -> None:
    """A key whose hash is not in the policy finds no caller."""
    policy = Policy.from_mapping({"callers": [entry("billing-api", BILLING_KEY)]})

    assert policy.caller_for_key(BILLING_KEY + "x") is None


def test_the_hash_itself_is_not_a_key() -> None:
    """Presenting the stored hash instead of the key finds no caller."""
    policy = Policy.from_mapping({"callers": [entry("billing-api", BILLING_KEY)]})

    assert policy.caller_for_key(hash_key(BILLING_KEY)) is None


def test_upper_case_hash_in_the_file_still_matches() -> None:
    """A hash written in upper-case hex finds its caller like a lower-case one."""
    data = {"callers": [{"name": "billing-api", "api_key_sha256": hash_key(BILLING_KEY).upper()}]}

    found = Policy.from_mapping(data).caller_for_key(BILLING_KEY)

    assert "billing-api" == (found.name if found else None)


def issuer_spec(issuer: str) -> dict[str, str]:
    return {"issuer": issuer, "jwks_url": f"{issuer}/jwks", "audience": "atlas-broker"}


LEDGER = "system:serviceaccount:payments:ledger"
CLUSTER_A, CLUSTER_B = "https://a.cluster.test", "https://b.cluster.test"


def test_subject_of_the_only_issuer_finds_its_workload_caller() -> None:
    """With one issuer configured, an entry without jwt_issuer is bound to that issuer."""
    policy = Policy.from_mapping(
        {
            "callers": [{"name": "ledger", "jwt_subject": LEDGER, "realms": ["acme"]}],
            "jwt_issuers": [issuer_spec(CLUSTER_A)],
        }
    )

    found = policy.caller_for_workload(WorkloadIdentity(CLUSTER_A, LEDGER))

    assert "ledger" == (found.name if found else None)


def test_same_subject_of_another_issuer_is_nobody() -> None:
    """A caller bound to one issuer is not found by another issuer's identical subject."""
    policy = Policy.from_mapping(
        {
            "callers": [{"name": "ledger", "jwt_subject": LEDGER, "jwt_issuer": CLUSTER_A}],
            "jwt_issuers": [issuer_spec(CLUSTER_A), issuer_spec(CLUSTER_B)],
        }
    )

    assert policy.caller_for_workload(WorkloadIdentity(CLUSTER_B, LEDGER)) is None


def test_subjects_are_unique_per_issuer() -> None:
    """The same subject under two issuers names two different callers."""
    policy = Policy.from_mapping(
        {
            "callers": [
                {"name": "ledger-a", "jwt_subject": LEDGER, "jwt_issuer": CLUSTER_A},
                {"name": "ledger-b", "jwt_subject": LEDGER, "jwt_issuer": CLUSTER_B},
            ],
            "jwt_issuers": [issuer_spec(CLUSTER_A), issuer_spec(CLUSTER_B)],
        }
    )

    names = [
        found.name if (found := policy.caller_for_workload(WorkloadIdentity(i, LEDGER))) else None
        for i in (CLUSTER_A, CLUSTER_B)
    ]
    assert ["ledger-a", "ledger-b"] == names


def test_unbound_workload_entry_beside_two_issuers_is_refused() -> None:
    """With two or more issuers, a jwt_subject entry must name its jwt_issuer."""
    with pytest.raises(PolicyError, match=r"callers\.0 \(ledger\): jwt_issuer is required"):
        Policy.from_mapping(
            {
                "callers": [{"name": "ledger", "jwt_subject": LEDGER}],
                "jwt_issuers": [issuer_spec(CLUSTER_A), issuer_spec(CLUSTER_B)],
            }
        )


def test_jwt_issuer_not_listed_is_refused() -> None:
    """An entry bound to an issuer the policy does not trust is a policy error."""
    with pytest.raises(PolicyError, match="not listed in jwt_issuers"):
        Policy.from_mapping(
            {
                "callers": [{"name": "ledger", "jwt_subject": LEDGER, "jwt_issuer": CLUSTER_B}],
                "jwt_issuers": [issuer_spec(CLUSTER_A)],
            }
        )


def test_empty_document_is_an_empty_policy() -> None:
    """An empty policy file means no caller is known."""
    assert 0 == len(Policy.from_mapping(None))


# --- validation --------------------------------------------------------------------------


def test_duplicate_caller_names_are_rejected() -> None:
    """Two callers with one name make the policy invalid."""
    message = policy_error(
        {"callers": [entry("billing-api", BILLING_KEY), entry("billing-api", AUDIT_KEY)]}
    )

    assert "duplicate caller name" in message


def test_duplicate_keys_are_rejected() -> None:
    """Two callers with one key hash make the policy invalid, whatever its hex case."""
    message = policy_error(
        {
            "callers": [
                entry("billing-api", BILLING_KEY),
                {"name": "copy", "api_key_sha256": hash_key(BILLING_KEY).upper()},
            ]
        }
    )

    assert "duplicate api_key_sha256" in message


def test_duplicate_subjects_are_rejected() -> None:
    """Two callers with one workload subject make the policy invalid."""
    message = policy_error(
        {"callers": [{"name": "a", "jwt_subject": "sa:x"}, {"name": "b", "jwt_subject": "sa:x"}]}
    )

    assert "duplicate jwt_subject" in message


def test_duplicate_caller_error_names_the_repeating_entry() -> None:
    """A duplicate's error names the entry that repeats an earlier one (callers.1)."""
    message = policy_error(
        {"callers": [entry("billing-api", BILLING_KEY), entry("billing-api", AUDIT_KEY)]}
    )

    assert message.startswith("callers.1")


def test_entry_with_key_and_subject_is_rejected_with_its_location() -> None:
    """An entry with both an API key hash and a workload subject is refused at callers.N."""
    message = policy_error(
        {
            "callers": [
                entry("billing-api", BILLING_KEY),
                entry("both", AUDIT_KEY, jwt_subject="sa:both"),
            ]
        }
    )

    assert message.startswith("callers.1:")


def test_entry_without_credential_is_rejected_with_its_location() -> None:
    """An entry with neither an API key hash nor a workload subject is refused at callers.N."""
    message = policy_error({"callers": [{"name": "nobody", "realms": ["acme"]}]})

    assert message.startswith("callers.0:")


def test_unknown_caller_field_is_rejected_with_its_location() -> None:
    """A misspelt field in an entry is refused and named with its path."""
    message = policy_error({"callers": [entry("billing-api", BILLING_KEY, realm=["acme"])]})

    assert message.startswith("callers.0.realm:")


def test_unknown_top_level_field_is_rejected_with_its_name() -> None:
    """A misspelt top-level section is refused and named."""
    assert policy_error({"caller": []}).startswith("caller:")


def test_unknown_role_is_rejected_with_its_location() -> None:
    """A role other than auditor or admin is refused at its path."""
    message = policy_error({"callers": [entry("root", BILLING_KEY, roles=["superuser"])]})

    assert message.startswith("callers.0.roles.0:")


def test_malformed_hash_is_rejected_with_its_location() -> None:
    """An api_key_sha256 that is not 64 hex digits (a raw key, say) is refused."""
    message = policy_error({"callers": [{"name": "oops", "api_key_sha256": BILLING_KEY}]})

    assert message.startswith("callers.0.api_key_sha256:")


def test_policy_error_does_not_echo_the_value() -> None:
    """A rejected api_key_sha256 (perhaps a raw key pasted by mistake) is not quoted back."""
    message = policy_error({"callers": [{"name": "oops", "api_key_sha256": BILLING_KEY}]})

    assert BILLING_KEY not in message


# --- the policy file ---------------------------------------------------------------------


def write_policy(path: Path, data: Any) -> None:
    """Replace the file atomically, as a ConfigMap update does (a new inode)."""
    staged = path.with_suffix(".staged")
    staged.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    os.replace(staged, path)


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    write_policy(path, {"callers": [entry("billing-api", BILLING_KEY, realms=["acme"])]})
    return path


def test_policy_file_loads_at_start(policy_path: Path) -> None:
    """The policy in force right after construction is the file's."""
    assert PolicyFile(policy_path).current().caller_for_key(BILLING_KEY) is not None


def test_policy_file_reloads_after_change(policy_path: Path) -> None:
    """A rewritten policy file takes effect on the next lookup."""
    policy_file = PolicyFile(policy_path, check_interval=0)
    write_policy(policy_path, {"callers": [entry("platform-audit", AUDIT_KEY, roles=["auditor"])]})

    policy = policy_file.current()

    assert (None, "platform-audit") == (
        policy.caller_for_key(BILLING_KEY),
        getattr(policy.caller_for_key(AUDIT_KEY), "name", None),
    )


def test_policy_file_keeps_the_old_policy_when_the_new_one_is_broken(
    policy_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken new file is ignored: the policy in force stays."""
    policy_file = PolicyFile(policy_path, check_interval=0)
    write_policy(policy_path, {"callers": [{"name": "nobody"}]})

    with caplog.at_level(logging.ERROR, logger="broker.adapters.policy_file"):
        policy = policy_file.current()

    assert policy.caller_for_key(BILLING_KEY) is not None


def test_policy_file_logs_an_error_for_a_broken_new_file(
    policy_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken new file is reported at ERROR, with the offending entry as the error."""
    policy_file = PolicyFile(policy_path, check_interval=0)
    write_policy(policy_path, {"callers": [{"name": "nobody"}]})

    with caplog.at_level(logging.ERROR, logger="broker.adapters.policy_file"):
        policy_file.current()

    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert [("policy file rejected, keeping the policy in force", True)] == [
        (record.getMessage(), str(getattr(record, "error", "")).startswith("callers.0:"))
        for record in errors
    ]


def test_policy_file_logs_an_error_for_unparsable_yaml(
    policy_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A new file that is not YAML at all is reported at ERROR and ignored."""
    policy_file = PolicyFile(policy_path, check_interval=0)
    write_policy(policy_path, "callers: [oops\n")

    with caplog.at_level(logging.ERROR, logger="broker.adapters.policy_file"):
        policy = policy_file.current()

    assert (1, True) == (
        sum(record.levelno == logging.ERROR for record in caplog.records),
        policy.caller_for_key(BILLING_KEY) is not None,
    )


def test_policy_file_takes_a_good_file_after_a_broken_one(policy_path: Path) -> None:
    """After a broken file, the next good one is loaded."""
    policy_file = PolicyFile(policy_path, check_interval=0)
    write_policy(policy_path, "- not a mapping\n")
    policy_file.current()
    write_policy(policy_path, {"callers": [entry("platform-audit", AUDIT_KEY)]})

    assert policy_file.current().caller_for_key(AUDIT_KEY) is not None


def test_policy_file_survives_the_file_disappearing(policy_path: Path) -> None:
    """A policy file that vanishes leaves the policy in force."""
    policy_file = PolicyFile(policy_path, check_interval=0)
    policy_path.unlink()

    assert policy_file.current().caller_for_key(BILLING_KEY) is not None


def test_policy_file_missing_at_start_raises(tmp_path: Path) -> None:
    """A policy file that does not exist at start-up stops the broker."""
    with pytest.raises(PolicyError):
        PolicyFile(tmp_path / "absent.yaml")


def test_policy_file_broken_at_start_raises(tmp_path: Path) -> None:
    """A policy file that is invalid at start-up stops the broker."""
    path = tmp_path / "policy.yaml"
    write_policy(path, {"callers": [{"name": "nobody"}]})

    with pytest.raises(PolicyError, match=r"^callers\.0:"):
        PolicyFile(path)


def test_no_policy_file_means_no_callers() -> None:
    """Without a policy file, no caller is known."""
    assert 0 == len(PolicyFile(None).current())
