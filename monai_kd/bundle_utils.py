"""Locate a bundle's files and the schema monai_kd ships for ``verify_metadata``."""

from __future__ import annotations

import json
import os
from pathlib import Path

SCHEMA_FILE = Path(__file__).resolve().parent / "schemas" / "metadata_schema.json"


class BundleError(ValueError):
    """A bundle folder is missing or lacks a required file."""


def bundle_file(bundle: str | os.PathLike, relative: str) -> str:
    """Return ``bundle/relative`` as a string, raising :class:`BundleError` if the bundle or file is missing."""
    root = Path(bundle)
    if not (root / "configs").is_dir():
        raise BundleError(f"'{root}' is not a bundle folder (no configs/ inside); e.g. bundles/kd.")
    path = root / relative
    if not path.exists():
        raise BundleError(f"bundle '{root}' has no {relative}.")
    return str(path)


def input_shape(bundle: str | os.PathLike, batch: int = 1) -> list[int]:
    """``[batch, channels, *spatial]`` of the first input in the bundle's ``metadata.json``."""
    with open(bundle_file(bundle, "configs/metadata.json")) as f:
        meta = json.load(f)
    spec = next(iter(meta["network_data_format"]["inputs"].values()))
    return [batch, int(spec["num_channels"]), *[int(s) for s in spec["spatial_shape"]]]


def verify_metadata(bundle: str | os.PathLike) -> None:
    """Validate ``configs/metadata.json`` against the schema shipped with monai_kd (no network access)."""
    from monai.bundle import verify_metadata as _verify

    _verify(meta_file=bundle_file(bundle, "configs/metadata.json"), filepath=str(SCHEMA_FILE))
