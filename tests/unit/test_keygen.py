"""`broker keygen`: a fresh key printed once, and a policy entry that admits exactly it."""

from __future__ import annotations

import io
import json

import pytest
import yaml

from broker.cli import main
from broker.core.policy import Policy


def keygen(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(["keygen", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def key_and_entry(out: str) -> tuple[str, list[dict[str, object]]]:
    lines = out.splitlines()
    return lines[1], yaml.safe_load(io.StringIO("\n".join(lines[2:])))


def test_the_entry_admits_the_printed_key(capsys: pytest.CaptureFixture[str]) -> None:
    """The printed YAML, as a policy, finds the printed key's caller with its realms and roles."""
    _, out, _ = keygen(
        "billing-api", "--realms", "acme,globex", "--roles", "auditor", capsys=capsys
    )
    key, entries = key_and_entry(out)
    caller = Policy.from_mapping({"callers": entries}).caller_for_key(key)
    assert ("billing-api", frozenset({"acme", "globex"}), frozenset({"auditor"})) == (
        (caller.name, caller.realms, caller.roles) if caller else None
    )


def test_json_is_one_object_whose_entry_admits_the_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--json prints one JSON object: the key, and the entry that admits exactly it."""
    status, out, _ = keygen("ci-bot", "--realms", "acme", "--json", capsys=capsys)
    printed = json.loads(out)
    policy = Policy.from_mapping({"callers": [printed["policy_entry"]]})
    caller = policy.caller_for_key(printed["api_key"])
    assert (0, 1, "ci-bot") == (status, len(out.splitlines()), caller.name if caller else None)


def test_the_key_is_printed_once_and_stored_only_as_a_hash(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The key appears once in the output; the entry holds its SHA-256, not the key."""
    _, out, _ = keygen("svc", capsys=capsys)
    key, entries = key_and_entry(out)
    assert (1, False) == (out.count(key), key in str(entries))


def test_every_key_is_new(capsys: pytest.CaptureFixture[str]) -> None:
    """Two runs print two different keys of at least 256 bits of randomness."""
    first, _ = key_and_entry(keygen("svc", capsys=capsys)[1])
    second, _ = key_and_entry(keygen("svc", capsys=capsys)[1])
    assert (True, True) == (first != second, len(first) >= 4 + 43)


def test_a_bad_realm_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """A realm name the broker would never accept stops keygen before any key is printed."""
    with pytest.raises(SystemExit) as exited:
        main(["keygen", "svc", "--realms", "../etc"])
    assert (2, "") == (exited.value.code, capsys.readouterr().out)


def test_an_unknown_role_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """Only auditor and admin are roles."""
    with pytest.raises(SystemExit) as exited:
        main(["keygen", "svc", "--roles", "root"])
    assert (2, "") == (exited.value.code, capsys.readouterr().out)
