"""Shared fixtures: where the real data and the bundles are."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
BUNDLES = sorted(p for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real-data folder (``../shared/data``); tests needing it skip when it is absent."""
    if not DATA.is_dir():
        pytest.skip(f"real data folder not found: {DATA}")
    return DATA
