# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""A label volume as a DICOM Segmentation (SEG) referencing its source series, written with highdicom.

The label volume must lie on the grid of the source :class:`~monai_kd.io.dicom_series.DicomSeries` (the layout
of :meth:`DicomSeries.load`, RAS affine); a volume with the same grid in another axis order or direction
(e.g. a NIfTI label map in LAS) is reoriented with MONAI's :class:`~monai.transforms.Orientation` first, and
anything else is refused. Label values are named by a bundle's ``channel_def`` (``{"0": "background",
"1": "spleen"}``): every non-background entry becomes one segment, numbered 1..N in increasing label value (as
DICOM requires), labelled with its name. The segmented property type is the SNOMED CT concept of that name
when pydicom's code dictionary has one (e.g. ``liver`` -> SCT 10200004), otherwise a private code
(scheme ``99MONAIKD``, value = label value); the category is *Anatomical Structure* unless given.

The SEG is a BINARY segmentation with one frame per segment and source slice by default (empty frames kept),
so each segment's frames line up one-to-one with the source images; every frame references its source image
and the SEG references the source series and study, with new Series and SOP Instance UIDs. (LABELMAP SEGs,
one frame per slice, are newer than the validators in common use.) Grey-scale sources without patient geometry
(e.g. projection X-rays) are refused: highdicom's SEG of them misses attributes the IOD needs. A single colour
photograph (e.g. a fundus image as Secondary Capture, RGB) gets a one-frame SEG without a frame of reference, with the
*Patient Orientation* the IOD then needs (copied from the source, else empty).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import highdicom as hd
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Orientation
from nibabel.orientations import aff2axcodes
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from .atomic import atomic_paths
from .derived import complete_derived
from .dicom_series import DicomSeries

__all__ = [
    "build_dicom_seg",
    "channel_names",
    "property_type",
    "read_dicom_seg",
    "segment_descriptions",
    "write_dicom_seg",
]

PRIVATE_SCHEME = "99MONAIKD"
AFFINE_ATOL_MM = 1e-3


def channel_names(channel_def: Mapping[str | int, str]) -> dict[int, str]:
    """Label value -> name of a bundle's ``channel_def``, without the background (label 0).

    Args:
        channel_def: e.g. ``{"0": "background", "1": "liver", "2": "spleen"}`` from a bundle's metadata.

    Returns:
        ``{1: "liver", 2: "spleen"}``, sorted by label value.

    Raises:
        ValueError: When a key is not a non-negative integer, a name is empty, or no foreground label is left.
    """
    names: dict[int, str] = {}
    for key, name in channel_def.items():
        try:
            value = int(key)
        except (TypeError, ValueError) as e:
            raise ValueError(f"channel_def key {key!r} is not an integer label value.") from e
        if value < 0 or not str(name).strip():
            raise ValueError(f"channel_def entry {key!r}: {name!r} needs a non-negative label and a non-empty name.")
        if value > 0:
            names[value] = str(name).strip()
    if not names:
        raise ValueError(f"channel_def {dict(channel_def)} has no foreground label (value > 0) to write as a segment.")
    return dict(sorted(names.items()))


def property_type(name: str, value: int) -> Code:
    """The coded concept for a segment or class name.

    Args:
        name: e.g. ``"liver"``, ``"adipose_tissue"``.
        value: its label value, used as the code value of the private fallback.

    Returns:
        The SNOMED CT code of pydicom's dictionary whose keyword is ``name`` in CamelCase (``AdiposeTissue``),
        else ``Code(str(value), "99MONAIKD", name)``.
    """
    keyword = "".join(part[:1].upper() + part[1:].lower() for part in re.split(r"[^0-9A-Za-z]+", name) if part)
    try:
        return getattr(codes.SCT, keyword)
    except AttributeError:
        return Code(value=str(value), scheme_designator=PRIVATE_SCHEME, meaning=name[:64])


def segment_descriptions(
    names: Mapping[int, str],
    algorithm_name: str,
    algorithm_version: str,
    category: Code = codes.SCT.AnatomicalStructure,
) -> list[hd.seg.SegmentDescription]:
    """highdicom segment descriptions, segment ``k`` (1-based) for the ``k``-th label value of ``names``.

    Args:
        names: label value -> name, as returned by :func:`channel_names`.
        algorithm_name: name of the model (e.g. the bundle name), recorded as the segmentation algorithm.
        algorithm_version: its version.
        category: segmented property category of every segment.

    Returns:
        One automatic-algorithm description per label value.
    """
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name[:64], family=codes.cid7162.ArtificialIntelligence, version=algorithm_version[:64]
    )
    return [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name[:64],
            segmented_property_category=category,
            segmented_property_type=property_type(name, value),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, (value, name) in enumerate(names.items(), start=1)
    ]


def _on_series_grid(labels: np.ndarray | torch.Tensor, series: DicomSeries, affine: np.ndarray | None) -> np.ndarray:
    """The label array in the layout of ``series.load()``, reoriented if ``affine`` is the same grid permuted.

    Raises:
        ValueError: When the labels are not on the series grid, or are not integers.
    """
    if affine is None and isinstance(labels, MetaTensor):
        affine = np.asarray(labels.affine, dtype=np.float64)
    array = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    spatial = len(series.spatial_shape)
    if array.ndim == spatial + 1 and array.shape[0] == 1:  # MONAI channel-first
        array = array[0]
    if array.ndim != spatial:
        raise ValueError(f"label array of shape {array.shape} for a {spatial}D series of shape {series.spatial_shape}.")
    if affine is not None and not np.allclose(affine, series.affine, atol=AFFINE_ATOL_MM, rtol=0):
        if spatial == 3:
            axcodes = "".join(aff2axcodes(series.affine))
            oriented = Orientation(axcodes=axcodes)(
                MetaTensor(torch.as_tensor(array[None]), affine=torch.as_tensor(affine))
            )
            affine, array = np.asarray(oriented.affine, dtype=np.float64), oriented[0].numpy()
        if not np.allclose(affine, series.affine, atol=AFFINE_ATOL_MM, rtol=0):
            raise ValueError(
                "the label volume is not on the grid of the source series (affines differ after reorientation):\n"
                f"labels {np.round(affine, 4).tolist()}\nseries {np.round(series.affine, 4).tolist()}\n"
                "resample it to the series first (e.g. invert the bundle's preprocessing with Invertd)."
            )
    if tuple(array.shape) != tuple(series.spatial_shape):
        raise ValueError(f"label volume of shape {array.shape} does not match the series shape {series.spatial_shape}.")
    integral = np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.bool_)
    if not integral and (not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array))):
        raise ValueError("labels must be integer label values (argmax the network output first).")
    return array.astype(np.int64)


class _Segmentation(hd.seg.Segmentation):
    """highdicom's Segmentation, also for a source of a multi-frame IOD that is not an *enhanced* image.

    highdicom 0.28 reads the pixel measures of every source whose IOD allows several frames (e.g. Ophthalmic
    Photography 8 Bit, Video Photographic, multi-frame true-colour Secondary Capture) from its Shared Functional
    Groups, which only enhanced images have ("no attribute 'SharedFunctionalGroupsSequence'"). Such a photograph has
    no pixel measures to copy, like a single-frame one: none are taken.
    """

    @staticmethod
    def _get_pixel_measures_sequence(source_image: Any, is_multiframe: bool, coordinate_system: Any) -> Any:
        if is_multiframe and "SharedFunctionalGroupsSequence" not in source_image:
            is_multiframe = False
        return hd.seg.Segmentation._get_pixel_measures_sequence(source_image, is_multiframe, coordinate_system)


def build_dicom_seg(
    labels: np.ndarray | torch.Tensor,
    series: DicomSeries,
    channel_def: Mapping[str | int, str],
    affine: np.ndarray | None = None,
    algorithm_name: str = "monai_kd",
    algorithm_version: str = "0.1.0",
    series_description: str | None = None,
    series_number: int = 1000,
    category: Code = codes.SCT.AnatomicalStructure,
    omit_empty_frames: bool = False,
) -> hd.seg.Segmentation:
    """Build (in memory) a DICOM SEG of a label volume aligned with its source series.

    Args:
        labels: label values on the series grid, shape ``series.spatial_shape`` or ``(1, *spatial_shape)``
            (a MONAI channel-first :class:`~monai.data.MetaTensor` brings its own affine).
        series: the source series.
        channel_def: label value -> name, e.g. a bundle's ``network_data_format.outputs.pred.channel_def``.
        affine: RAS affine of ``labels`` if it is not ``series.affine`` (e.g. of a NIfTI label map).
        algorithm_name: model name recorded in the segment descriptions and as the manufacturer model name.
        algorithm_version: model version.
        series_description: *Series Description* of the SEG; default ``"SEG <algorithm_name>"``.
        series_number: *Series Number* of the SEG.
        category: segmented property category of every segment.
        omit_empty_frames: drop frames without any pixel of their segment (smaller file, but segments then
            have fewer frames than the source has images).

    Returns:
        The segmentation dataset, with new Series and SOP Instance UIDs; attributes it needs because of what
        it copied from a slightly invalid source are filled (:func:`monai_kd.io.derived.complete_derived`).

    Raises:
        ValueError: When a grey-scale source has no patient geometry, the labels are not on the series grid, or hold a value
            missing from ``channel_def``.
    """
    if not series.is_volume and series.channels == 1:
        raise ValueError(
            f"'{series.source}' has no patient geometry (ImagePositionPatient/ImageOrientationPatient): a DICOM SEG "
            "of it would not be a valid IOD; write the label map as NIfTI instead."
        )
    if not series.is_volume:  # a colour photograph (e.g. fundus) without patient geometry: one frame
        array = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(series.spatial_shape)
        array = array.astype(np.int64)[..., None]
    else:
        array = _on_series_grid(labels, series, affine)
    names = channel_names(channel_def)
    present = {int(v) for v in np.unique(array)} - {0}
    unknown = sorted(present - set(names))
    if unknown:
        raise ValueError(f"label values {unknown} have no name in channel_def {dict(channel_def)}.")
    lookup = np.zeros(max(max(names), int(array.max(initial=0))) + 1, dtype=np.uint16)
    for number, value in enumerate(names, start=1):
        lookup[value] = number
    numbered = lookup[array].astype(np.uint8 if len(names) < 256 else np.uint16)
    frames = numbered.transpose(2, 1, 0)  # (slices, rows, columns)
    sources = series.reference_datasets()
    if series.is_multiframe:  # pixel_array follows the frame order of the single source instance
        ordered = np.empty_like(frames)
        ordered[[f.frame for f in series.frames]] = frames
        frames = ordered
    seg = _Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(names, algorithm_name, algorithm_version, category),
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="monai_kd",
        manufacturer_model_name=algorithm_name[:64],
        software_versions=algorithm_version[:64],
        device_serial_number="0",
        content_label="MONAI_KD",
        content_description=f"Automatic segmentation by {algorithm_name}"[:64],
        series_description=(series_description or f"SEG {algorithm_name}")[:64],
        omit_empty_frames=omit_empty_frames,
    )
    if not series.is_volume:  # General Image: Patient Orientation is type 2C without a frame of reference
        seg.PatientOrientation = sources[0].get("PatientOrientation", "")
    return complete_derived(seg, sources)


def write_dicom_seg(
    labels: np.ndarray | torch.Tensor,
    series: DicomSeries,
    path: str | os.PathLike,
    channel_def: Mapping[str | int, str],
    **kwargs,
) -> str:
    """Build a DICOM SEG with :func:`build_dicom_seg` and write it atomically (temporary file, then rename).

    Args:
        labels: label volume on the series grid.
        series: the source series (its files and folder are protected from being overwritten).
        path: output file, e.g. ``out/seg.dcm``.
        channel_def: label value -> name.
        kwargs: further arguments of :func:`build_dicom_seg`.

    Returns:
        The written path.
    """
    seg = build_dicom_seg(labels, series, channel_def, **kwargs)
    with atomic_paths(path, protect=(series.source, *series.files)) as (temp,):
        seg.save_as(temp, enforce_file_format=True)
    return os.fspath(path)


def read_dicom_seg(
    path: str | os.PathLike, series: DicomSeries, channel_def: Mapping[str | int, str] | None = None
) -> np.ndarray:
    """Read a SEG back as a label volume on the grid of its source series (inverse of :func:`write_dicom_seg`).

    Args:
        path: the SEG file.
        series: its source series.
        channel_def: label value -> name used when writing; segments are mapped back to label values through
            their labels. Without it, the array holds segment numbers.

    Returns:
        Integer array of shape ``series.spatial_shape`` (0 where no segment is present).

    Raises:
        ValueError: When a segment label is not in ``channel_def``.
    """
    seg = hd.seg.segread(path)
    sources = series.reference_datasets()
    if series.is_multiframe:
        numbers = seg.get_pixels_by_source_frame(
            sources[0].SOPInstanceUID,
            source_frame_numbers=[f.frame + 1 for f in series.frames],
            combine_segments=True,  # type: ignore[operator]
        )
    else:
        numbers = seg.get_pixels_by_source_instance([ds.SOPInstanceUID for ds in sources], combine_segments=True)
    lookup = np.arange(max(seg.segment_numbers) + 1)
    if channel_def is not None:
        by_name = {name: value for value, name in channel_names(channel_def).items()}
        for number in seg.segment_numbers:
            label = seg.get_segment_description(number).segment_label
            if label not in by_name:
                raise ValueError(f"SEG segment {number} '{label}' is not in channel_def {dict(channel_def)}.")
            lookup[number] = by_name[label]
    return lookup[np.asarray(numbers)].transpose(2, 1, 0)
