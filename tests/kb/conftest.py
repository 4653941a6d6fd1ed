"""One HPO load per test session (the wheel's ontology, about 1.5 s)."""

from __future__ import annotations

import pytest

from app.kb.hpo import HpoKb, load_hpo


@pytest.fixture(scope="session")
def hpo() -> HpoKb:
    return load_hpo()
