"""Every observers test starts and ends with no failpoint armed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from percolator import failpoints


@pytest.fixture(autouse=True)
def _no_failpoints() -> Iterator[None]:
    failpoints.reset()
    yield
    failpoints.reset()
