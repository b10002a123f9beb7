from collections.abc import Iterator

import pytest

from rewards.selectors import ledger_violations


@pytest.fixture
def audited() -> Iterator[None]:
    """Ends the test with the ledger audit: no invariant may be broken."""
    yield
    assert ledger_violations() == []
