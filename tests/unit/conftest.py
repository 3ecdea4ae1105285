"""Unit tests import their fakes as the sibling module `fakes`, whatever the import mode."""

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from harness import Harness, MakeHarness, harnesses  # noqa: E402 - needs the path above


@pytest.fixture
async def make_harness() -> AsyncIterator[MakeHarness]:
    """Brokers on fakes, closed after the test."""
    async for make in harnesses():
        yield make


@pytest.fixture
def h(make_harness: MakeHarness) -> Harness:
    """One broker on fakes."""
    return make_harness()
