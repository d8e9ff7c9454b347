# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Run a bundle's student on a DICOM series (or a NIfTI volume) and write standard outputs.

``monai-kd infer-dicom --bundle BUNDLE_DIR --input IN --output OUT_DIR [--modality CT] [--description TEXT]
[--series_uid UID] [--nifti] [--ckpt_file FILE] [--device cpu] [--overlay CONFIG] [--<config id> VALUE ...]``

The model run is the one the weights hold: its channel count (e.g. a student trained with ``--in_channels 3``) is
given by the same override, or read from the weights, and builds the network, the preprocessing (``@in_channels``)
and the input contract checked (:func:`model_metadata`).

The task comes from the bundle's metadata, ``network_data_format.outputs.pred.format``: ``classes`` or
``probabilities`` -> classification, ``labels`` or ``segmentation`` -> segmentation. The bundle's own
``inference.json`` does the work through :class:`monai.bundle.ConfigParser`: its ``preprocessing`` (whose
``LoadImaged`` gets a :class:`~monai_kd.io.dicom_series.DicomSeriesReader` registered, so DICOM input is
loaded as MONAI's readers would, RAS affine; NIfTI input gets a plain :class:`~monai.data.NibabelReader`, so
loader options meant for another reader do not break it), ``network_def`` with the weights of ``models/model.pt`` (or
``ckpt_file``), ``inferer`` and ``postprocessing`` (``SaveImage(d)`` transforms are dropped: outputs are
written here).

Outputs in ``OUT_DIR``, named after the source series UID (DICOM) or the file name (NIfTI):

============== ================================================ ====================================
task           DICOM input                                      NIfTI input
============== ================================================ ====================================
segmentation   ``<uid>.seg.dcm`` DICOM SEG (+ ``<uid>.seg.nii.gz`` ``<name>.seg.nii.gz``
               with ``--nifti``)
classification ``<uid>.sr.dcm`` Comprehensive SR +              ``<name>.classification.json``
               ``<uid>.classification.json``
============== ================================================ ====================================

A volume given to a 2D classification network is classified on its middle slice (index ``slices // 2`` in
increasing position along the slice normal); the SR and the JSON name that slice. A 2D segmentation network
segments a volume slice by slice when the bundle's ``inferer`` is MONAI's :class:`~monai.inferers.SliceInferer`
(which does exactly that) and is refused otherwise; a 3D network on a 2D image is refused. Segmentation predictions
are argmax-ed if they have several channels and brought back to the input grid with MONAI's ``Invertd`` when
the bundle's postprocessing did not do it.

All outputs of a run are written to temporary files and renamed into place together (nothing partial is left
on error), never inside the input folder nor over an input file; DICOM outputs carry new UIDs. Bad input is
reported with :class:`~monai_kd.io.dicom_series.DicomInputError`, :class:`~monai_kd.io.atomic.OutputPathError`
or :class:`~monai_kd.bundle_utils.BundleError` (all ``ValueError``), or ``FileNotFoundError``, before any
output is written.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import NibabelReader
from monai.inferers import SliceInferer

from monai_kd.bundle_utils import BundleError, bundle_file
from monai_kd.input_contract import check_input, override_note
from monai_kd.io.atomic import atomic_paths, check_output_dir
from monai_kd.io.dicom_series import DicomInputError, DicomSeries, DicomSeriesReader, list_series, load_dicom_series

__all__ = [
    "OVERLAY_2D", "TASKS", "TIMING_KEYS", "BundlePredictor", "bundle_task", "check_series", "infer_dicom",
    "infer_dicom_folder", "model_metadata", "overlay_for_series",
]

logger = logging.getLogger(__name__)

TASKS = {
    "classes": "classification",
    "probabilities": "classification",
    "labels": "segmentation",
    "segmentation": "segmentation",
}
NIFTI_SUFFIXES = (".nii", ".nii.gz")
SLICE_KEY = "slice_index"  # data key of the slice a 2D network classified
TIMING_KEYS = ("read", "preprocess", "model_load", "inference", "postprocess", "write", "total")


@contextmanager
def _timed(timings: dict | None, key: str) -> Iterator[None]:
    """Add the wall-clock seconds of the block to ``timings[key]`` (nothing when ``timings`` is ``None``)."""
    if timings is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - start


def _metadata(bundle: str) -> dict:
    """The bundle's ``configs/metadata.json``."""
    with open(bundle_file(bundle, "configs/metadata.json")) as f:
        return json.load(f)


def bundle_task(meta: dict) -> str:
    """``"classification"`` or ``"segmentation"``, from ``network_data_format.outputs.pred.format``.

    Args:
        meta: a bundle's metadata.

    Returns:
        The task.

    Raises:
        BundleError: When the metadata has no ``pred`` output or its format is unknown.
    """
    try:
        fmt = meta["network_data_format"]["outputs"]["pred"]["format"]
    except (KeyError, TypeError) as e:
        raise BundleError("metadata has no network_data_format.outputs.pred.format.") from e
    if fmt not in TASKS:
        raise BundleError(f"output format '{fmt}' is neither classification nor segmentation; known: {sorted(TASKS)}.")
    return TASKS[fmt]


def _channel_def(meta: dict) -> dict[str, str]:
    """``channel_def`` of the ``pred`` output (empty if absent)."""
    return dict(meta["network_data_format"]["outputs"]["pred"].get("channel_def", {}))


def _input_spec(meta: dict) -> tuple[str, int]:
    """Key and spatial rank of the network's first input."""
    key, spec = next(iter(meta["network_data_format"]["inputs"].items()))
    return key, len(spec.get("spatial_shape", [0, 0, 0]))


def _is_nifti(path: str) -> bool:
    """Whether ``path`` names a NIfTI file."""
    return os.path.isfile(path) and path.lower().endswith(NIFTI_SUFFIXES)


def _config_files(bundle: str, overlay: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """The bundle's ``inference.json`` followed by the overlay configs (each must exist)."""
    overlays = [overlay] if isinstance(overlay, (str, os.PathLike)) else list(overlay or ())
    for path in overlays:
        if not os.path.isfile(path):
            raise BundleError(f"overlay config '{path}' does not exist.")
    return [bundle_file(bundle, "configs/inference.json"), *map(os.fspath, overlays)]


def _parser(bundle: str, device: torch.device, configs: list[str] | None = None, override: dict | None = None) -> Any:
    """A :class:`monai.bundle.ConfigParser` of the bundle's ``inference.json`` (then ``configs``' overlays), its
    metadata and the ``override`` values (``{id: value}``, as ``monai.bundle run`` takes them)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(configs or bundle_file(bundle, "configs/inference.json"))
    parser.read_meta(bundle_file(bundle, "configs/metadata.json"))
    parser.update(dict(override or {}))
    parser["bundle_root"] = bundle
    parser["device"] = device
    for key in ("preprocessing", "network_def", "inferer"):
        if key not in parser:
            raise BundleError(f"bundle '{bundle}': configs/inference.json has no '{key}'.")
    return parser


def _loader_index(preprocessing: Any) -> int:
    """Position of the loading transform (``LoadImaged`` or monai_kd's ``ReadImaged``) in the bundle's preprocessing."""
    from monai.transforms import LoadImaged

    from monai_kd.data.readers import ReadImaged

    for index, transform in enumerate(getattr(preprocessing, "transforms", ())):
        if isinstance(transform, (LoadImaged, ReadImaged)):
            return index
    raise BundleError("the bundle's preprocessing has no top-level LoadImaged transform to load the input with.")


def _weights(bundle: str, ckpt_file: str | None, device: torch.device | str = "cpu") -> tuple[str, Any]:
    """Path of the student's weights and their state dict (``None`` for an ONNX model).

    Raises:
        BundleError: When the file does not exist or cannot be read as weights (one line).
    """
    ckpt = ckpt_file or os.path.join(bundle, "models", "model.pt")
    if not os.path.isfile(ckpt):
        raise BundleError(
            f"no weights: '{ckpt}' does not exist; train the bundle (monai-kd train) or pass --ckpt_file."
        )
    if ckpt.lower().endswith(".onnx"):
        return ckpt, None
    from monai_kd.networks.pretrained import load_checkpoint  # empty / truncated / pickled files: one clear line

    state = load_checkpoint(ckpt, map_location=device)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):  # {"model": state_dict} checkpoints
        state = state["model"]
    return ckpt, state


def _trained_channels(ckpt: str, state: Any) -> int | None:
    """Input channels the weights were trained with: dimension 1 of the first convolution weight of a state dict, or
    the ONNX model's input shape (``None`` when not stated)."""
    if state is None:
        import onnx

        dims = onnx.load(ckpt, load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        return int(dims[1].dim_value) if len(dims) > 1 and dims[1].HasField("dim_value") else None
    for value in state.values() if isinstance(state, dict) else ():
        if isinstance(value, torch.Tensor) and value.ndim >= 3:
            return int(value.shape[1])
    return None


def _converts_channels(parser: Any) -> bool:
    """Whether the preprocessing gives any image the network's channel count (monai_kd's ``AsImaged``: colour
    averaged to grey, grey repeated), so the input's own channel count is not part of the contract."""
    transforms = parser.get("preprocessing", {})
    transforms = transforms.get("transforms", []) if isinstance(transforms, dict) else []
    return any(isinstance(t, dict) and str(t.get("_target_", "")).endswith("AsImaged") for t in transforms)


def model_metadata(
    bundle: str,
    ckpt_file: str | None = None,
    overlay: str | list[str] | tuple[str, ...] | None = None,
    override: dict | None = None,
    device: torch.device | str = "cpu",
    missing_ok: bool = False,
    segment_names: list[str] | tuple[str, ...] | None = None,
) -> tuple[dict, dict, Any]:
    """The metadata of the model actually run, the config overrides that build it, and its weights.

    The bundle's ``configs/metadata.json`` describes its own student (e.g. one FLAIR channel). A student trained with
    ``--in_channels 3`` is run with ``--in_channels 3`` (``override``, as ``monai-kd train`` / ``export`` take it);
    without that override the channel count is the one the weights were trained with. The network, the preprocessing
    (``@in_channels``), the input contract and the outputs then follow it
    (:func:`~monai_kd.bundle_utils.configured_metadata`). When the preprocessing converts channels itself
    (``AsImaged``), a grey or colour input is accepted whatever the model's channel count.

    Args:
        bundle: bundle folder.
        ckpt_file: student weights (state dict or ``.onnx``); default ``models/model.pt`` of the bundle.
        overlay: config file(s) layered over ``inference.json`` (e.g. ``configs/inference_2d.json``).
        override: ``{id: value}`` config overrides, e.g. ``{"in_channels": 3}``.
        device: where the weights are loaded.
        missing_ok: without weights, answer from the config and ``override`` alone (weights ``None``); the
            missing file is reported when the network is built.
        segment_names: names of a segmentation's labels 1, 2, ... for the SEG (``None``: the bundle's, or
            ``label 1``, ... for a model of another channel count).

    Returns:
        ``(metadata, override, (ckpt, state))``: ``override`` with ``in_channels`` set from the weights when the
        config has a top-level ``in_channels`` and it differs; ``state`` is ``None`` for an ONNX model.

    Raises:
        BundleError: When the weights are missing, or were trained with another channel count than the one asked
            for (``--in_channels``) or than the config builds (one line).
    """
    from monai.bundle import ConfigParser

    from monai_kd.bundle_utils import configured_metadata

    override = dict(override or {})
    weights = None
    if not missing_ok or os.path.isfile(ckpt_file or os.path.join(bundle, "models", "model.pt")):
        weights = _weights(bundle, ckpt_file, device)
    trained = None if weights is None else _trained_channels(*weights)
    parser = ConfigParser()
    parser.read_config(_config_files(bundle, overlay))
    parser.update({"bundle_root": bundle, **override})
    if trained is not None and "in_channels" not in override and "in_channels" in parser:
        override["in_channels"] = trained
        parser["in_channels"] = trained
    configured = None
    for ref in ("network_def#in_channels", "network_def#n_input_channels"):
        if ref in parser:
            configured = int(parser.get_parsed_content(ref))
            break
    if weights is not None and trained is not None and configured is not None and trained != configured:
        raise BundleError(
            f"'{weights[0]}' was trained with {trained} input channel(s) but the config builds {configured}: "
            f"run it with the training's --in_channels {trained}."
        )
    try:
        meta = configured_metadata(_metadata(bundle), configured, segment_names=segment_names)
    except ValueError as e:
        raise BundleError(str(e)) from None
    if _converts_channels(parser) and meta.get("input_contract", {}).get("channels") is not None:
        meta["input_contract"]["channels"] = None  # grey or colour: the preprocessing brings it to the network's
    return meta, override, weights


def _network(
    parser: Any, bundle: str, ckpt_file: str | None, device: torch.device, weights: tuple[str, Any] | None = None
) -> torch.nn.Module:
    """The bundle's ``network_def`` with trained weights, in eval mode on ``device`` (``weights``: the
    ``(path, state)`` :func:`_weights` read already)."""
    ckpt, state = weights or _weights(bundle, ckpt_file, device)
    if state is None:  # an exported (e.g. int8) model, run by ONNX Runtime on the CPU
        from monai_kd.quantization import OnnxNetwork

        return OnnxNetwork(ckpt)
    network = parser.get_parsed_content("network_def")
    try:
        network.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise BundleError(f"weights in '{ckpt}' do not fit the bundle's network_def: {e}") from e
    return network.to(device).eval()


def _postprocessing(parser: Any) -> Any:
    """The bundle's ``postprocessing`` without ``SaveImage(d)`` (outputs are written by :func:`infer_dicom`)."""
    from monai.transforms import Compose, SaveImage, SaveImaged

    if "postprocessing" not in parser:
        return None
    post = parser.get_parsed_content("postprocessing")
    transforms = post.flatten().transforms if isinstance(post, Compose) else [post]
    return Compose([t for t in transforms if not isinstance(t, (SaveImage, SaveImaged))])


def _middle_slice(image: Any) -> tuple[Any, int]:
    """The middle slice (last spatial axis) of a channel-first 3D image, with its affine updated."""
    from monai.transforms import SpatialCrop, SqueezeDim

    depth = int(image.shape[-1])
    index = depth // 2
    cropped = SpatialCrop(roi_start=(0, 0, index), roi_end=(*image.shape[1:3], index + 1))(image)
    return SqueezeDim(dim=-1)(cropped), index


def _load(
    preprocessing: Any,
    loader_index: int,
    reader: Any,
    key: str,
    input: str,
    spatial_dims: int,
    task: str,
    timings: dict | None = None,
    slice_wise: bool = False,
) -> dict:
    """Run the bundle's preprocessing; a volume for a 2D classification network is cut to its middle slice.

    The bundle's ``LoadImaged`` (at ``loader_index``) reads the input with ``reader``.

    The loader part is timed as ``read``, the rest as ``preprocess`` (when ``timings`` is given). A volume for a
    2D segmentation network is kept whole if ``slice_wise`` (the bundle's inferer runs the network slice by
    slice) and refused otherwise.

    Returns:
        The preprocessed data dictionary, with the index of the slice used under :data:`SLICE_KEY` (``None``
        when the whole image was used).
    """
    split = loader_index + 1
    try:
        with _timed(timings, "read"):
            data: dict = {key: input}
            if loader_index:
                data = preprocessing(data, end=loader_index)
            data = preprocessing.transforms[loader_index](data, reader=reader)
    except Exception as e:
        cause = _root_cause(e)
        if isinstance(cause, (DicomInputError, FileNotFoundError)):
            raise cause from None
        raise DicomInputError(f"cannot read '{input}': {type(cause).__name__}: {cause}") from e
    image = data[key]
    bad = int((~torch.isfinite(torch.as_tensor(image))).sum())
    if bad:
        raise DicomInputError(f"'{input}' holds {bad} NaN or infinite voxel value(s); fix the image, nothing was written.")
    image_dims = len(image.meta.get("spatial_shape", image.shape[1:]))
    has_channel = image.ndim == image_dims + 1
    if image_dims not in (2, 3) or image.ndim not in (image_dims, image_dims + 1):
        raise DicomInputError(f"'{input}' loads as an image of shape {tuple(image.shape)}; expected 2D or 3D.")
    index = None
    if image_dims == 3 and spatial_dims == 2 and task != "classification":
        if not slice_wise:
            raise DicomInputError(
                f"the bundle's network is 2D but '{input}' is a volume of shape {tuple(image.shape[-3:])}; "
                "segmenting it slice by slice needs a SliceInferer as the 'inferer' of the bundle's inference.json."
            )
    elif image_dims == 3 and spatial_dims == 2:
        sliced, index = _middle_slice(image if has_channel else image.unsqueeze(0))
        data[key] = sliced if has_channel else sliced[0]
    elif image_dims == 2 and spatial_dims == 3:
        raise DicomInputError(
            f"the bundle's network is 3D but '{input}' is a 2D image of shape {tuple(image.shape[-2:])}."
        )
    data[SLICE_KEY] = index
    with _timed(timings, "preprocess"):
        try:
            return preprocessing(data, start=split)
        except Exception as e:  # e.g. a 2D colour photograph through a volume pipeline (Orientationd, Spacingd)
            cause = _root_cause(e)
            raise DicomInputError(
                f"the bundle's preprocessing cannot take '{input}', a {image_dims}D image of shape "
                f"{tuple(image.shape)}: {type(cause).__name__}: {cause}"
                + (" (2D images: --overlay <bundle>/configs/inference_2d.json)" if image_dims == 2 else "")
            ) from e


def _root_cause(error: BaseException) -> BaseException:
    """The innermost exception of a chain (MONAI wraps transform errors in RuntimeErrors)."""
    while error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__):
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return error


def _probabilities(pred: Any, class_names: list[str]) -> np.ndarray:
    """Class probabilities from the postprocessed prediction (softmax applied if the bundle did not)."""
    values = np.asarray(
        pred.detach().cpu().float().numpy() if isinstance(pred, torch.Tensor) else pred, dtype=np.float64
    )
    values = values.reshape(-1)
    if not np.isfinite(values).all():
        raise BundleError("the network's output is NaN or infinite (non-finite weights in the checkpoint?); nothing was written.")
    if len(values) != len(class_names):
        raise BundleError(f"the network gives {len(values)} outputs for {len(class_names)} classes {class_names}.")
    if values.min() < 0 or values.max() > 1 or abs(values.sum() - 1) > 1e-3:
        warnings.warn("the bundle's postprocessing gives no probabilities; applying softmax.", stacklevel=3)
        values = np.exp(values - values.max())
        values /= values.sum()
    return values


def _labels(data: dict, key: str, preprocessing: Any) -> Any:
    """Label map (1, *spatial) of the prediction on the grid of the loaded input."""
    from monai.transforms import AsDiscrete, Invertd

    pred = data["pred"]
    if pred.shape[0] > 1:
        pred = AsDiscrete(argmax=True)(pred)
    original = tuple(int(s) for s in data[key].meta.get("spatial_shape", pred.shape[1:]))
    if tuple(pred.shape[1:]) != original:
        data = {**data, "pred": pred}
        pred = Invertd(keys="pred", transform=preprocessing, orig_keys=key, nearest_interp=True)(data)["pred"]
    if tuple(pred.shape[1:]) != original:
        raise BundleError(f"prediction of shape {tuple(pred.shape[1:])} cannot be mapped back to the input {original}.")
    return pred.round().to(torch.int64)


def _write_nifti(labels: np.ndarray, affine: np.ndarray, path: str) -> None:
    """Write a label map with MONAI's :class:`~monai.data.NibabelWriter` (no resampling)."""
    from monai.data import NibabelWriter

    writer = NibabelWriter(output_dtype=np.uint8 if labels.max(initial=0) < 256 else np.uint16)
    writer.set_data_array(labels, channel_dim=None)
    writer.set_metadata({"affine": affine, "original_affine": affine}, resample=False)
    writer.write(path)


def infer_dicom(
    bundle: str,
    input: str,
    output: str,
    modality: str | None = None,
    description: str | None = None,
    series_uid: str | None = None,
    nifti: bool = False,
    ckpt_file: str | None = None,
    device: str = "cpu",
    timings: dict | None = None,
    force: bool = False,
    overlay: str | list[str] | tuple[str, ...] | None = None,
    segment_names: list[str] | tuple[str, ...] | None = None,
    **override: Any,
) -> list[str]:
    """Run the bundle's student on a DICOM series or a NIfTI file and write SEG/NIfTI or SR/JSON outputs.

    The input is checked against the bundle's ``input_contract`` (:mod:`monai_kd.input_contract`), as it applies to
    the model run (:func:`model_metadata`: e.g. three channels for a student trained with ``--in_channels 3``), and
    refused unless ``force``; the weights are checked against the bundle's model card when one records them
    (:func:`monai_kd.model_card.card_for_model`), and the outputs name the card's version.

    Args:
        bundle: bundle folder, e.g. ``bundles/kd``.
        input: folder of DICOM series, a DICOM file (single image or multi-frame), or a ``.nii``/``.nii.gz`` file.
        output: output folder (created if missing; must not be the input folder or inside it).
        modality: select the DICOM series of this modality, e.g. ``CT``.
        description: select the DICOM series whose description contains this text (case-insensitive).
        series_uid: select the DICOM series with this Series Instance UID.
        nifti: for a segmentation of DICOM input, also write the label map as NIfTI.
        ckpt_file: student weights (a state dict), or an ONNX model (``.onnx``, e.g. an int8 ``model_int8.onnx``)
            run by ONNX Runtime on the CPU; default ``models/model.pt`` of the bundle.
        device: torch device, e.g. ``cpu`` or ``cuda:0``.
        timings: if a dict is given, wall-clock seconds of the stages are added to it (keys
            :data:`TIMING_KEYS`): ``read`` (series scan, pixel decoding and the bundle's ``LoadImaged``),
            ``preprocess`` (the rest of the bundle's preprocessing), ``model_load`` (config parsing, network and
            weights), ``inference`` (the bundle's inferer), ``postprocess`` (the bundle's postprocessing),
            ``write`` (label map back on the input grid, building and writing the outputs) and ``total``.
        force: run on an input outside the bundle's input contract; the outputs record the override.
        overlay: config file(s) layered over the bundle's ``inference.json``; default, for a DICOM image without
            patient geometry (a photograph), the bundle's ``configs/inference_2d.json`` when it has one
            (:func:`overlay_for_series`).
        segment_names: names of a segmentation's labels 1, 2, ... in the SEG, e.g. ``["retinal vessel"]`` for a
            model of the user's own data (default: the bundle's metadata, or ``label 1``, ... for a model of
            another channel count).
        override: config overrides as ``monai.bundle run`` takes them, e.g. ``in_channels=3``.

    Returns:
        The written paths.

    Raises:
        FileNotFoundError: When the input does not exist.
        DicomInputError: When the input cannot be used (see :mod:`monai_kd.io.dicom_series`).
        OutputPathError: When the output is the input or inside the input folder.
        BundleError: When the bundle, its weights or its task do not fit.
    """
    begin = time.perf_counter()
    input, output = os.fspath(input), os.fspath(output)
    task = bundle_task(_metadata(bundle))
    if not os.path.exists(input):
        raise FileNotFoundError(f"input does not exist: '{input}'.")
    out_dir = check_output_dir(output, input)
    series: DicomSeries | None = None
    if _is_nifti(input):
        if modality or description or series_uid:
            raise DicomInputError("--modality, --description and --series_uid select DICOM series; the input is NIfTI.")
        meta = model_metadata(bundle, ckpt_file, overlay, override, missing_ok=True, segment_names=segment_names)[0]
        contract = check_input(meta, input=input, force=force, bundle=bundle)
    else:
        with _timed(timings, "read"):
            series = load_dicom_series(input, modality=modality, description=description, series_uid=series_uid)
        overlay = overlay_for_series(bundle, series, overlay)
        meta = model_metadata(bundle, ckpt_file, overlay, override, missing_ok=True, segment_names=segment_names)[0]
        contract = check_input(meta, series=series, force=force, bundle=bundle)  # before decoding or building
        check_series(series, task, timings)
    predictor = BundlePredictor(bundle, ckpt_file=ckpt_file, device=device, timings=timings, overlay=overlay,
                                override=override, segment_names=segment_names)
    written = predictor.predict(input, out_dir, series=series, nifti=nifti, timings=timings, contract=contract)
    if timings is not None:
        timings["total"] = timings.get("total", 0.0) + time.perf_counter() - begin
    return written


#: the overlay a bundle may ship for 2D images (photographs), which its volume ``inference.json`` does not read
OVERLAY_2D = "configs/inference_2d.json"


def overlay_for_series(
    bundle: str, series: DicomSeries, overlay: str | list[str] | tuple[str, ...] | None = None
) -> str | list[str] | tuple[str, ...] | None:
    """The overlay to run ``series`` with: ``overlay`` when given, else the bundle's ``configs/inference_2d.json``
    for an image without patient geometry (a photograph) when the bundle has one, else none.

    Args:
        bundle: bundle folder.
        series: the selected series.
        overlay: the overlay asked for (kept as it is when given).
    """
    if overlay:
        return overlay
    path = os.path.join(bundle, OVERLAY_2D)
    if not series.is_volume and os.path.isfile(path):
        logger.info("'%s' is a 2D image: running it with %s", series.source, path)
        return path
    return None


def check_series(series: DicomSeries, task: str, timings: dict | None = None) -> None:
    """Decode a selected series now and check that the task can be written for it (before any model is built).

    Args:
        series: the selected series.
        task: ``"segmentation"`` or ``"classification"``.
        timings: optional stage timings (decoding is added to ``read``).

    Raises:
        DicomInputError: When the pixel data cannot be decoded, or a segmentation is asked of a grey-scale series
            without patient geometry (a single colour photograph is segmented into a one-frame SEG).
    """
    with _timed(timings, "read"):
        series.load()  # decode now, so unreadable pixel data is reported before the model is built
    if task == "segmentation" and not series.is_volume and series.channels == 1:  # colour photographs: 2D SEG
        raise DicomInputError(
            f"'{series.source}' has no patient geometry (ImagePositionPatient/ImageOrientationPatient): a DICOM SEG "
            "cannot reference it validly; convert it to NIfTI to segment it."
        )


class BundlePredictor:
    """A bundle's student loaded once (config, transforms, inferer, weights) and run on many inputs.

    :func:`infer_dicom` builds one per call; a long-running service (``monai-kd serve``) keeps one per bundle and
    calls :meth:`predict` for every series. :meth:`predict` may be called from several threads: each call passes
    its own reader to the bundle's ``LoadImaged`` instead of registering it on the shared loader.

    Args:
        bundle: bundle folder.
        ckpt_file: student weights; default ``models/model.pt`` of the bundle.
        device: torch device, e.g. ``cpu`` or ``cuda:0``.
        timings: if a dict is given, the seconds spent loading are added to ``timings["model_load"]``.
        overlay: config file(s) layered over ``inference.json``, e.g. the bundle's ``configs/inference_2d.json``.
        override: ``{id: value}`` config overrides, e.g. ``{"in_channels": 3}`` for a student trained with them;
            without ``in_channels`` the weights' channel count is used (see :func:`model_metadata`).
        segment_names: names of a segmentation's labels 1, 2, ... in the SEG (default: the bundle's metadata).

    Raises:
        BundleError: When the bundle, its weights or its task do not fit.
    """

    def __init__(
        self,
        bundle: str,
        ckpt_file: str | None = None,
        device: str = "cpu",
        timings: dict | None = None,
        overlay: str | list[str] | tuple[str, ...] | None = None,
        override: dict | None = None,
        segment_names: list[str] | tuple[str, ...] | None = None,
    ) -> None:
        self.bundle = os.fspath(bundle)
        self.device = torch.device(device)
        with _timed(timings, "model_load"):
            self.meta, override, weights = model_metadata(self.bundle, ckpt_file, overlay, override, self.device,
                                                          segment_names=segment_names)
        self.task = bundle_task(self.meta)
        self.name = str(self.meta.get("name") or Path(self.bundle).resolve().name)
        from monai_kd.model_card import card_for_model

        ckpt = ckpt_file or os.path.join(self.bundle, "models", "model.pt")
        self.card = card_for_model(ckpt) if os.path.isfile(ckpt) else None  # refuses weights altered after the card
        self.version = str(self.card["card_version"] if self.card else self.meta.get("version", ""))
        with _timed(timings, "model_load"):
            parser = _parser(self.bundle, self.device, _config_files(self.bundle, overlay), override)
            self.key, self.spatial_dims = _input_spec(self.meta)
            self.preprocessing = parser.get_parsed_content("preprocessing")
            self.inferer = parser.get_parsed_content("inferer")
            self.loader_index = _loader_index(self.preprocessing)
            self.network = _network(parser, self.bundle, ckpt_file, self.device, weights)
            self.postprocessing = _postprocessing(parser)

    def predict(
        self,
        input: str,
        out_dir: str | os.PathLike,
        series: DicomSeries | None = None,
        nifti: bool = False,
        timings: dict | None = None,
        force: bool = False,
        contract: dict | None = None,
    ) -> list[str]:
        """Run the student on one input and write its outputs (see :func:`infer_dicom`).

        Args:
            input: a NIfTI file, or the source of ``series``.
            out_dir: output folder (checked by the caller with :func:`~monai_kd.io.atomic.check_output_dir`).
            series: the selected DICOM series (``None`` for NIfTI input).
            nifti: also write a segmentation of DICOM input as NIfTI.
            timings: optional stage timings.
            force: run on an input outside the bundle's input contract (the outputs record the override).
            contract: the :func:`~monai_kd.input_contract.check_input` record, when the caller checked already.

        Returns:
            The written paths.

        Raises:
            InputContractError: the input is outside the bundle's input contract and ``force`` is false.
        """
        if contract is None:
            contract = check_input(self.meta, series=series, input=None if series is not None else input, force=force,
                                   bundle=self.bundle)
        provenance = {"version": self.version, "card": self.card, "contract": contract}
        reader = DicomSeriesReader(series=series) if series is not None else NibabelReader()
        slice_wise = isinstance(self.inferer, SliceInferer)
        data = _load(
            self.preprocessing, self.loader_index, reader, self.key, input, self.spatial_dims, self.task, timings,
            slice_wise,
        )
        with _timed(timings, "inference"), torch.no_grad():
            data["pred"] = self.inferer(data[self.key][None].to(self.device), self.network)[0]
        with _timed(timings, "postprocess"):
            if self.postprocessing is not None:
                data = self.postprocessing(data)
        stem = series.series_uid if series is not None else Path(input).name.split(".nii")[0]
        prefix = Path(out_dir) / stem
        with _timed(timings, "write"):
            if self.task == "segmentation":
                return _write_segmentation(
                    data, self.key, self.preprocessing, self.meta, self.name, series, prefix, input, nifti, provenance
                )
            return _write_classification(data, self.meta, self.name, series, prefix, input, provenance)


def _write_segmentation(
    data: dict,
    key: str,
    preprocessing: Any,
    meta: dict,
    name: str,
    series: DicomSeries | None,
    prefix: Path,
    input: str,
    nifti: bool,
    provenance: dict | None = None,
) -> list[str]:
    """Write ``<prefix>.seg.dcm`` (DICOM input; plus ``.seg.nii.gz`` if ``nifti``) or ``<prefix>.seg.nii.gz``."""
    channel_def = _channel_def(meta)
    if not channel_def:
        raise BundleError("segmentation bundle metadata has no outputs.pred.channel_def to name the segments.")
    labels = _labels(data, key, preprocessing)
    affine = np.asarray(labels.affine, dtype=np.float64)
    array = labels[0].cpu().numpy()
    if series is None:
        targets = [f"{prefix}.seg.nii.gz"]
        with atomic_paths(*targets, protect=input) as (temp,):
            _write_nifti(array, affine, temp)
        return targets
    from monai_kd.io.dicom_seg import build_dicom_seg

    provenance = provenance or {}
    version = str(provenance.get("version") or meta.get("version", ""))
    note = override_note(provenance.get("contract"))
    seg = build_dicom_seg(array, series, channel_def, affine=affine, algorithm_name=name, algorithm_version=version,
                          series_description=f"SEG {name} FORCED" if note else None)
    if note:  # a forced run on input outside the contract says so in the object itself
        seg.ContentDescription = "FORCED: input outside the model's contract"[:64]
        seg.ImageComments = note[:10240]
    targets = [f"{prefix}.seg.dcm"] + ([f"{prefix}.seg.nii.gz"] if nifti else [])
    with atomic_paths(*targets, protect=(input, *series.files)) as temps:
        seg.save_as(temps[0], enforce_file_format=True)
        if nifti:
            _write_nifti(array, affine, temps[1])
    return targets


def _write_classification(
    data: dict, meta: dict, name: str, series: DicomSeries | None, prefix: Path, input: str,
    provenance: dict | None = None,
) -> list[str]:
    """Write ``<prefix>.classification.json`` and, for DICOM input, ``<prefix>.sr.dcm`` first."""
    channel_def = _channel_def(meta)
    n_classes = int(meta["network_data_format"]["outputs"]["pred"].get("num_channels", len(channel_def) or 1))
    class_names = [channel_def.get(str(i), f"class_{i}") for i in range(n_classes)]
    probabilities = _probabilities(data["pred"], class_names)
    slice_index = data.get(SLICE_KEY)
    provenance = provenance or {}
    version = str(provenance.get("version") or meta.get("version", ""))
    card = provenance.get("card")
    note = override_note(provenance.get("contract"))
    summary: dict[str, Any] = {
        "task": "classification",
        "bundle": name,
        "bundle_version": version,
        "input": input,
        "predicted_class": class_names[int(probabilities.argmax())],
        "probabilities": {c: float(p) for c, p in zip(class_names, probabilities, strict=True)},
        "slice_index": slice_index,
        "model_card": None if card is None else {"card_version": card.get("card_version"), "bundle": card.get("bundle")},
        "input_contract": provenance.get("contract"),
    }
    targets = [f"{prefix}.classification.json"]
    sr = None
    if series is not None:
        from monai_kd.io.dicom_sr import build_classification_sr

        references = series.reference_datasets()
        used = series.frames if slice_index is None else [series.frames[slice_index]]
        summary.update(
            series_instance_uid=series.series_uid,
            study_instance_uid=series.study_uid,
            modality=series.modality,
            series_description=series.description,
            source_sop_instance_uids=sorted({str(references[f.instance].SOPInstanceUID) for f in used}),
            source_frame_numbers=None if used[0].frame is None else [f.frame + 1 for f in used],  # type: ignore[operator]
            derived_uids=list(series.derived_uids),
        )
        sr = build_classification_sr(
            probabilities, class_names, series, slice_index=slice_index, algorithm_name=name, algorithm_version=version,
            series_description=f"Classification {name} FORCED" if note else None,
        )
        targets.insert(0, f"{prefix}.sr.dcm")
    summary["outputs"] = targets
    with atomic_paths(*targets, protect=(input, *(series.files if series is not None else ()))) as temps:
        if sr is not None:
            sr.save_as(temps[0], enforce_file_format=True)
        with open(temps[-1], "w") as f:
            json.dump(summary, f, indent=2, allow_nan=False)  # never a bare NaN: that is not JSON
    return targets


def infer_dicom_folder(
    bundle: str,
    input: str,
    output: str,
    modality: str | None = None,
    description: str | None = None,
    nifti: bool = False,
    ckpt_file: str | None = None,
    device: str = "cpu",
    timings: dict | None = None,
    progress: Any = None,
    force: bool = False,
    overlay: str | list[str] | tuple[str, ...] | None = None,
    segment_names: list[str] | tuple[str, ...] | None = None,
    **override: Any,
) -> list[str]:
    """Run the bundle's student on **every** DICOM series of a folder of studies with one loaded model.

    The model (config, transforms, weights) is built once (:class:`BundlePredictor`) and every series found below
    ``input`` (optionally only those of ``modality`` / whose description contains ``description``) is read, checked
    and predicted in turn, its outputs written atomically as :func:`infer_dicom` writes them. A series that cannot be
    used does not stop the others: the error names every failed series after the rest are written.

    Args:
        bundle: bundle folder.
        input: folder of DICOM studies (searched recursively).
        output: output folder (must not be inside ``input``).
        modality: only series of this Modality.
        description: only series whose SeriesDescription contains this text (case-insensitive).
        nifti: also write segmentations as NIfTI.
        ckpt_file: student weights; default ``models/model.pt`` of the bundle.
        device: torch device.
        timings: optional stage seconds summed over the series (see :func:`infer_dicom`), plus ``series``.
        progress: optional callable ``progress(done, total, series_uid)`` after each series.
        force: run on series outside the bundle's input contract (else they fail, named, and the others run).
        overlay: config file(s) layered over the bundle's ``inference.json`` (see :func:`infer_dicom`; one model
            serves every series, so a folder of photographs needs ``configs/inference_2d.json`` given here).
        segment_names: names of a segmentation's labels 1, 2, ... in the SEG (see :func:`infer_dicom`).
        override: config overrides, e.g. ``in_channels=3`` (see :func:`infer_dicom`).

    Returns:
        The written paths of every series.

    Raises:
        FileNotFoundError: When the input does not exist.
        DicomInputError: When no series matches, or (after the others are written) when some series failed.
    """
    begin = time.perf_counter()
    input, output = os.fspath(input), os.fspath(output)
    if not os.path.exists(input):
        raise FileNotFoundError(f"input does not exist: '{input}'.")
    out_dir = check_output_dir(output, input)
    found, failed = _list_studies(input)
    found = [
        s for s in found
        if (not modality or s.modality.upper() == modality.strip().upper())
        and (not description or description.strip().lower() in s.description.lower())
    ]
    if not found:
        problems = ("\n" + "\n".join(failed)) if failed else ""
        raise DicomInputError(
            f"no DICOM series in '{input}' matches modality={modality}, description={description}.{problems}"
        )
    predictor = BundlePredictor(bundle, ckpt_file=ckpt_file, device=device, timings=timings, overlay=overlay,
                                override=override, segment_names=segment_names)
    written: list[str] = []
    total = len(found) + len(failed)
    for done, summary in enumerate(found, 1):
        try:
            with _timed(timings, "read"):
                series = load_dicom_series(list(summary.files), series_uid=summary.series_uid)
            check_series(series, predictor.task, timings)
            written += predictor.predict(series.source, out_dir, series=series, nifti=nifti, timings=timings, force=force)
        except (ValueError, OSError) as error:  # DicomInputError, BundleError, unreadable files: keep going
            failed.append(f"  - {summary}: {type(error).__name__}: {error}")
        if progress is not None:
            progress(done, len(found), summary.series_uid)
    if timings is not None:
        timings["series"] = timings.get("series", 0) + len(found)
        timings["total"] = timings.get("total", 0.0) + time.perf_counter() - begin
    if failed:
        raise DicomInputError(
            f"{len(failed)} of {total} series or study folders failed (the others were written):\n" + "\n".join(failed)
        )
    return written


def _list_studies(input: str) -> tuple[list, list[str]]:
    """Series of a file, or of each entry of a folder listed on its own (an unreadable study does not hide others)."""
    if not os.path.isdir(input):
        return list_series(input), []
    entries = sorted(os.path.join(input, name) for name in os.listdir(input))
    loose = [e for e in entries if os.path.isfile(e)]
    found, failed = [], []
    for entry in [e for e in entries if os.path.isdir(e)] + ([loose] if loose else []):
        try:
            found += list_series(entry)
        except (ValueError, OSError) as error:
            failed.append(f"  - '{entry if isinstance(entry, str) else input}': {type(error).__name__}: {error}")
    return found, failed
