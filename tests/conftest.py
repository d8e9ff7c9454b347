"""Shared fixtures: where the real data and the bundles are."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
BUNDLES = sorted(p for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` (the evidence and benchmark scripts are not part of the package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real-data folder (``../shared/data``); tests needing it skip when it is absent."""
    if not DATA.is_dir():
        pytest.skip(f"real data folder not found: {DATA}")
    return DATA


@pytest.fixture(scope="session")
def retinal_dir(data_dir) -> Path:
    """The real cross-device retinal vessel set (STARE, VEVIO, AV-WIDE); tests needing it skip when it is absent."""
    folder = data_dir / "retinal-vessels"
    if not folder.is_dir():
        pytest.skip(f"retinal-vessels data not found: {folder}")
    return folder


@pytest.fixture(scope="session")
def pneumonia_pngs(tmp_path_factory, data_dir) -> Path:
    """Eight real PneumoniaMNIST test images written as PNG files (4 normal, 4 pneumonia), as a user would have."""
    import numpy as np
    from PIL import Image

    archive = np.load(data_dir / "pneumoniamnist" / "pneumoniamnist.npz")
    images, labels = archive["test_images"], archive["test_labels"].reshape(-1)
    folder = tmp_path_factory.mktemp("png")
    for label in (0, 1):
        for i in np.flatnonzero(labels == label)[:4]:
            Image.fromarray(images[i]).save(folder / f"test{i:03d}_label{label}.png")
    return folder
