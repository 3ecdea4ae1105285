"""Caller keys are never compared in a way that leaks timing: a key is hashed and the hash
looked up in a dict, and no `==` anywhere in the package runs over a raw secret."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from broker.core.policy import Policy, hash_key

KEY = "atb_secret-key-0123456789abcdef0123456789"
PACKAGE = Path(__file__).resolve().parents[2] / "broker"
# Names that hold secrets as presented: a key, a credential, a password, a client secret.
SECRET_NAME = re.compile(r"(api_?key|credential|password|secret)", re.IGNORECASE)
# ... unless they name something derived from it or about it.
DERIVED = re.compile(r"(sha256|hash|digest|fingerprint|_path|_file|_id$|_name$)", re.IGNORECASE)


class RecordingDict(dict[str, Any]):
    """A dict that remembers which keys were looked up."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.looked_up: list[str] = []

    def get(self, key: str, default: Any = None) -> Any:
        self.looked_up.append(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.looked_up.append(key)
        return super().__getitem__(key)


def test_caller_for_key_looks_up_the_hash_of_the_key() -> None:
    """`Policy.caller_for_key` hashes the key and looks the hash up; the key itself is never
    a lookup or comparison operand."""
    policy = Policy.from_mapping({"callers": [{"name": "a", "api_key_sha256": hash_key(KEY)}]})
    recording = RecordingDict(policy._by_key_hash)
    policy._by_key_hash = recording
    found = policy.caller_for_key(KEY)
    assert ("a", [hash_key(KEY)]) == (found.name if found else None, recording.looked_up)


def _operand_names(node: ast.expr) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [node.attr]
    if isinstance(node, ast.Call):
        return _operand_names(node.func)
    if isinstance(node, ast.Subscript):
        return _operand_names(node.value)
    return []


def secret_equality_comparisons(source: str) -> list[str]:
    """Lines comparing something named like a raw secret with `==` or `!=`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        if not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
            continue
        for operand in [node.left, *node.comparators]:
            for name in _operand_names(operand):
                if SECRET_NAME.search(name) and not DERIVED.search(name):
                    found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_check_itself_catches_a_raw_key_comparison() -> None:
    """The scan below would notice `api_key == presented` (it is not vacuous)."""
    assert 1 == len(secret_equality_comparisons("ok = api_key == presented\n"))


def test_no_equality_comparison_runs_over_a_raw_secret() -> None:
    """No module under broker/ compares a key, credential, password or secret with ==/!=
    (hmac.compare_digest or a hash lookup is the way)."""
    offenders = {
        str(path.relative_to(PACKAGE)): hits
        for path in sorted(PACKAGE.rglob("*.py"))
        if (hits := secret_equality_comparisons(path.read_text(encoding="utf-8")))
    }
    assert {} == offenders
