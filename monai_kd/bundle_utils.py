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
    meta_file = bundle_file(bundle, "configs/metadata.json")  # a missing bundle is reported before MONAI loads
    from monai.bundle import verify_metadata as _verify

    _verify(meta_file=meta_file, filepath=str(SCHEMA_FILE))


#: keys ``monai.bundle run`` takes besides config ids
RUN_ARGUMENTS = frozenset({"config_file", "meta_file", "logging_file", "args_file", "tracking", "bundle_root"})


def _config_ids(node: object, prefix: str = "") -> dict[str, object]:
    """Every id of a parsed JSON config (``a``, ``a#b``, ``a#0#c``) and its raw value."""
    ids: dict[str, object] = {}
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        name = f"{prefix}{key}"
        ids[name] = value
        ids.update(_config_ids(value, f"{name}#"))
    return ids


def check_overrides(config_files: str | os.PathLike | list[str | os.PathLike], overrides: dict[str, object]) -> None:
    """Refuse command-line overrides that name no key of the configs, or give text where a number is expected.

    ``monai.bundle run --max_epoch 1`` silently adds an unused key ``max_epoch`` and trains with the default
    ``max_epochs``. This reads the configs as plain JSON (no torch or monai import) and raises with the closest
    existing keys instead.

    Args:
        config_files: the config file(s) the run merges, in order.
        overrides: ``{id: value}`` as given on the command line (ids may be nested: ``train#trainer#max_epochs``).

    Raises:
        BundleError: an override names no config id (the message lists the closest ones), or a numeric setting is
            given a value that is not a number nor a ``$`` / ``@`` expression.
    """
    import difflib

    files = [config_files] if isinstance(config_files, (str, os.PathLike)) else list(config_files)
    merged: dict = {}
    for file in files:
        with open(file) as f:
            merged.update(json.load(f))
    ids = _config_ids(merged)
    for key, value in overrides.items():
        if key in RUN_ARGUMENTS:
            continue
        if key not in ids:
            close = difflib.get_close_matches(key, list(ids), n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "no similar key exists."
            raise BundleError(f"unknown config key '{key}' for {', '.join(map(str, files))}: {hint}")
        current = ids[key]
        numeric = isinstance(current, (int, float)) and not isinstance(current, bool)
        if numeric and isinstance(value, str) and not value.startswith(("$", "@", "%")):
            try:
                float(value)
            except ValueError:
                raise BundleError(f"config key '{key}' expects a number (default {current}), got '{value}'.") from None


def default_device(cuda: str = "cuda:0"):
    """``torch.device(cuda)`` when CUDA is available, else the CPU: a bundle's default ``device`` component.

    Args:
        cuda: the CUDA device to use when there is one.
    """
    import torch

    return torch.device(cuda if torch.cuda.is_available() else "cpu")
