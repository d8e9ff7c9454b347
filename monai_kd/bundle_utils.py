"""Locate a bundle's files and the schema monai_kd ships for ``verify_metadata``."""

from __future__ import annotations

import copy
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


#: ``network_data_format`` output formats of a classifier and of a segmentation network
CLASSIFICATION_FORMATS = frozenset({"classes", "probabilities"})
SEGMENTATION_FORMATS = frozenset({"labels", "segmentation"})
#: ``channel_def`` of a network input with this many channels, when it differs from the metadata's
CHANNEL_NAMES = {3: ("red", "green", "blue")}


def configured_metadata(
    metadata: dict,
    in_channels: int | None = None,
    spatial_size: list[int] | tuple[int, ...] | None = None,
    class_names: list[str] | tuple[str, ...] | None = None,
    segment_names: list[str] | tuple[str, ...] | None = None,
) -> dict:
    """A bundle's metadata with its network input and output following the configuration actually run.

    ``configs/metadata.json`` describes the bundle's default (e.g. one FLAIR channel, PneumoniaMNIST classes). A model
    trained with ``--in_channels 3``, another ``--spatial_size`` or on other classes ships metadata that says so:
    ``network_data_format`` inputs ``num_channels`` / ``spatial_shape`` / ``channel_def``, ``input_contract``
    ``channels``, the ``pred`` output's ``spatial_shape`` (segmentation) and ``channel_def`` (classification) follow
    the given values. Values equal to the metadata's leave it as it is (its channel names included). Another channel
    count means a model of other data than the bundle's: the input contract's modality, body part and pixel spacing
    are dropped and a segmentation's labels are named ``label 1``, ... instead of the bundle's segment names.

    Args:
        metadata: the bundle's metadata (not modified).
        in_channels: channels of the network input (``None``: as declared).
        spatial_size: spatial shape of the network input (``None``, or a different rank than declared: as declared).
        class_names: names of the output classes in label order (``None``: as declared).
        segment_names: names of a segmentation's labels 1, 2, ... (label 0 is the background), e.g.
            ``["retinal vessel"]`` for a model of the user's own data (``None``: as declared, or ``label 1``, ...).

    Returns:
        A new metadata dictionary.

    Raises:
        ValueError: When ``segment_names`` are given for a classifier, or their number is not the network's number
            of labels minus the background.
    """
    meta = copy.deepcopy(dict(metadata))
    fmt = meta.get("network_data_format", {})
    inputs = fmt.get("inputs", {})
    other_data = False  # another channel count: a model of the user's data, not of the bundle's
    if inputs:
        spec = next(iter(inputs.values()))
        if in_channels is not None and int(in_channels) != int(spec.get("num_channels", 1)):
            other_data = True
            n = int(in_channels)
            names = CHANNEL_NAMES.get(n, tuple(f"channel {i}" for i in range(n)))
            spec["num_channels"] = n
            spec["channel_def"] = {str(i): name for i, name in enumerate(names)}
            contract = meta.get("input_contract")
            if contract:  # the bundle's own data (modality, body part, spacing) is not what this model learnt
                for key in ("modality", "body_part", "pixel_spacing_mm"):
                    contract.pop(key, None)
                contract["image_kind"] = f"{n}-channel images (a model trained with --in_channels {n} on other data)"
                contract["channels"] = n
    pred = fmt.get("outputs", {}).get("pred")
    images = [next(iter(inputs.values()))] if inputs else []
    if pred is not None and pred.get("format") in SEGMENTATION_FORMATS:
        images.append(pred)  # a segmentation has its input's spatial shape
    for spec in images:
        shape = spec.get("spatial_shape")
        if spatial_size is not None and shape is not None and len(spatial_size) == len(shape):
            spec["spatial_shape"] = [int(s) for s in spatial_size]
    if segment_names:
        if pred is None or pred.get("format") not in SEGMENTATION_FORMATS:
            raise ValueError("segment names are for a segmentation bundle; this bundle's network is a classifier.")
        n = int(pred.get("num_channels", len(pred.get("channel_def", {})) or 2))
        if len(segment_names) != n - 1:
            raise ValueError(f"{len(segment_names)} segment name(s) {list(segment_names)} for a network of {n} labels: "
                             f"give {n - 1} (label 0 is the background).")
        pred["channel_def"] = {"0": "background", **{str(i): str(v) for i, v in enumerate(segment_names, 1)}}
    elif other_data and pred is not None and pred.get("format") in SEGMENTATION_FORMATS and not class_names:
        # the bundle's segment names (e.g. "whole tumour") are those of its own data: name the labels by value
        n = int(pred.get("num_channels", len(pred.get("channel_def", {})) or 2))
        pred["channel_def"] = {"0": "background", **{str(i): f"label {i}" for i in range(1, n)}}
    if class_names and pred is not None and pred.get("format") in CLASSIFICATION_FORMATS:
        if pred.get("spatial_shape") == [pred.get("num_channels")]:
            pred["spatial_shape"] = [len(class_names)]
        pred["num_channels"] = len(class_names)
        pred["channel_def"] = {str(i): str(name) for i, name in enumerate(class_names)}
    return meta


def config_network_input(config_files: list[str], override: dict | None = None, net_id: str = "network_def") -> dict:
    """``in_channels`` and ``spatial_size`` of a bundle configuration, after the command line's overrides.

    ``in_channels`` is the network's (``<net_id>#in_channels``, or ResNet's ``<net_id>#n_input_channels``),
    ``spatial_size`` the config's top-level value; either is ``None`` when the config has none.

    Args:
        config_files: the config files merged, in order.
        override: ``{id: value}`` overrides (e.g. ``{"in_channels": 3}``).
        net_id: id of the network definition.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_files)
    parser.update(dict(override or {}))
    found: dict = {"in_channels": None, "spatial_size": None}
    for ref in (f"{net_id}#in_channels", f"{net_id}#n_input_channels"):
        if ref in parser:
            found["in_channels"] = int(parser.get_parsed_content(ref))
            break
    if "spatial_size" in parser:
        found["spatial_size"] = [int(s) for s in parser.get_parsed_content("spatial_size")]
    return found


def checkpoint_in_channels(ckpt_file: str | os.PathLike) -> int | None:
    """Input channels of a network's state dict: dimension 1 of its first convolution weight (``None``: no such)."""
    import torch

    state = torch.load(ckpt_file, map_location="cpu", weights_only=True)
    for value in state.values() if isinstance(state, dict) else ():
        if isinstance(value, torch.Tensor) and value.ndim >= 3:
            return int(value.shape[1])
    return None
