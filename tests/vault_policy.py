"""The broker's Vault policy as the operations guide documents it: the one `hcl` block
of docs/operations.md, so the tests run the broker under exactly what operators copy."""

from __future__ import annotations

import re
from pathlib import Path

OPERATIONS_GUIDE = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
_HCL_BLOCK = re.compile(r"^```hcl\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def documented_vault_policy() -> str:
    """The text of the guide's single `hcl` block."""
    blocks = _HCL_BLOCK.findall(OPERATIONS_GUIDE.read_text(encoding="utf-8"))
    assert 1 == len(blocks), f"{OPERATIONS_GUIDE.name} must hold exactly one hcl block"
    policy: str = blocks[0]
    return policy
