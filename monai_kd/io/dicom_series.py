# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""DICOM image series as a volume with checked geometry, and a MONAI reader for it.

The input is a folder (searched recursively) holding one or more series, a single DICOM file (one slice or a
multi-frame image), or a list of files. Instances are grouped by *Series Instance UID* and one series is
selected by modality, description or UID; ambiguous or empty selections are refused with a message that
lists the series found. The selected images (or frames) are sorted by their position along the slice normal
(``ImageOrientationPatient`` row x column cosines), not by *Instance Number*, and the series is refused -- not
silently stacked -- when the slices have mixed orientations, pixel spacings or sizes, duplicate positions,
uneven spacing (a missing slice) or positions off a straight line. Pixel values get the modality rescale
(*Rescale Slope/Intercept*, the *Modality LUT*, per-frame *Pixel Value Transformation* of enhanced
multi-frame images, *Dose Grid Scaling* of RT Dose).

The volume follows the layout of MONAI's DICOM readers with default arguments: array axes ``(column, row,
slice)``, affine in RAS world coordinates (:class:`monai.data.ITKReader` gives the same array and affine;
:class:`monai.data.PydicomReader` has the same axes but orders slices by *Instance Number*). Slices go in
increasing position along the normal, as ITK/GDCM order them, so the first slice is the one closest to
``-normal``; the third affine column is the actual step between slices (a gantry tilt gives a sheared
affine). A single image without patient geometry (e.g. a projection X-ray) gives a 2D array
``(column, row)`` with a pixel-spacing affine.

Anonymised files sometimes have empty UIDs. Missing *SOP Instance/Class UIDs* are taken from the file meta
header; a missing *Series*, *Study* or *Frame of Reference UID* is replaced by a deterministic UID derived from
the series content (same input, same UID), reported by :attr:`DicomSeries.derived_uids` and a warning, so the
outputs can still reference the series consistently. The input files are never modified.

- :func:`list_series`: the series found in an input.
- :func:`load_dicom_series`: select one series and check its geometry (headers only; pixels on demand).
- :class:`DicomSeries`: the selected series: ``load()`` the volume, ``affine``, ``meta()``, source datasets
  for referencing (:meth:`DicomSeries.reference_datasets`).
- :class:`DicomSeriesReader`: a :class:`monai.data.ImageReader` so a bundle's own ``LoadImage(d)`` loads
  the series (``loader.register(DicomSeriesReader(...))``).
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.data import ImageReader
from monai.data.utils import orientation_ras_lps
from monai.utils import MetaKeys, SpaceKeys
from pydicom.dataset import Dataset
from pydicom.misc import is_dicom
from pydicom.uid import UID, generate_uid

__all__ = ["DicomInputError", "DicomSeries", "DicomSeriesReader", "SeriesSummary", "list_series", "load_dicom_series"]

# modalities of objects that are not images of the patient, skipped when scanning (SEG has pixel data, too)
NON_IMAGE_MODALITIES = frozenset({"SEG", "SR", "KO", "PR", "RTSTRUCT", "RTPLAN", "RTRECORD", "REG", "RWV", "DOC"})
ORIENTATION_TOL = 1e-3  # direction cosines
POSITION_TOL_MM = 1e-2  # absolute tolerance on positions (mm), added to SPACING_RTOL * step
SPACING_RTOL = 0.01  # relative tolerance on the slice step
_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


class DicomInputError(ValueError):
    """The DICOM input cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class SeriesSummary:
    """One series found in an input.

    Attributes:
        series_uid: *Series Instance UID*, or a UID derived from the content when the files have none.
        modality: *Modality* (e.g. ``CT``).
        description: *Series Description* (may be empty).
        series_number: *Series Number*, if present.
        files: the files of the series.
        uid_derived: whether ``series_uid`` was derived (the files have an empty *Series Instance UID*).
    """

    series_uid: str
    modality: str
    description: str
    series_number: int | None
    files: tuple[str, ...] = field(repr=False)
    uid_derived: bool = False

    def __str__(self) -> str:
        derived = " (derived: the files have no SeriesInstanceUID)" if self.uid_derived else ""
        number = "" if self.series_number is None else f" #{self.series_number}"
        return (
            f"{self.modality or '?'}{number} '{self.description}' series_uid={self.series_uid}{derived}, "
            f"{len(self.files)} file(s)"
        )


@dataclass(frozen=True)
class _Frame:
    """Geometry and value mapping of one 2D image: a single-frame instance or one frame of a multi-frame one."""

    instance: int  # index into DicomSeries.files / headers
    frame: int | None  # 0-based frame number in a multi-frame instance, None for a single-frame instance
    position: np.ndarray | None  # ImagePositionPatient (LPS, mm)
    orientation: np.ndarray | None  # ImageOrientationPatient (row cosines, column cosines)
    pixel_spacing: tuple[float, float]  # (between rows, between columns) in mm
    slope: float = 1.0
    intercept: float = 0.0


@dataclass
class DicomSeries:
    """A DICOM image series selected from an input, with checked geometry; pixel data is loaded on demand.

    Attributes:
        source: the input it was selected from (folder, file or list of files).
        files: files of the instances; single-frame instances are in volume (slice) order.
        headers: their headers (read without pixel data), in the order of ``files``.
        frames: one entry per slice, in volume order.
        affine: 4x4 voxel-to-world matrix in RAS, for axes ``(column, row, slice)`` (or ``(column, row)``).
        spatial_shape: ``(columns, rows, slices)``; ``(columns, rows)`` for a 2D image without geometry.
        series_uid: *Series Instance UID* (derived if the files have none).
        study_uid: *Study Instance UID* (derived if the files have none).
        frame_of_reference_uid: *Frame of Reference UID* (derived if the files have none; empty for 2D images).
        modality: *Modality*.
        description: *Series Description*.
        derived_uids: names of the UIDs that were derived because the files have none.
    """

    source: str
    files: tuple[str, ...]
    headers: tuple[Dataset, ...]
    frames: tuple[_Frame, ...]
    affine: np.ndarray
    spatial_shape: tuple[int, ...]
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    modality: str
    description: str
    derived_uids: tuple[str, ...] = ()
    _volume: np.ndarray | None = field(default=None, repr=False)
    _references: tuple[Dataset, ...] | None = field(default=None, repr=False)

    @property
    def is_volume(self) -> bool:
        """Whether the series has patient geometry (a 3D volume, possibly of one slice)."""
        return len(self.spatial_shape) == 3

    @property
    def channels(self) -> int:
        """*Samples per Pixel*: 3 for a colour (e.g. RGB fundus) photograph, 1 for grey-scale images."""
        return int(self.headers[0].get("SamplesPerPixel", 1) or 1)

    @property
    def is_multiframe(self) -> bool:
        """Whether the slices are frames of one multi-frame instance."""
        return self.frames[0].frame is not None

    @property
    def positions(self) -> np.ndarray:
        """``ImagePositionPatient`` (LPS, mm) of each slice in volume order, shape ``(slices, 3)``."""
        if not self.is_volume:
            raise DicomInputError(f"{self.source}: a 2D image without patient geometry has no slice positions.")
        return np.stack([f.position for f in self.frames])  # type: ignore[misc]

    @property
    def orientation(self) -> np.ndarray:
        """``ImageOrientationPatient`` shared by all slices (row cosines, column cosines)."""
        if not self.is_volume:
            raise DicomInputError(f"{self.source}: a 2D image without patient geometry has no orientation.")
        return self.frames[0].orientation  # type: ignore[return-value]

    @property
    def pixel_spacing(self) -> tuple[float, float]:
        """*Pixel Spacing* ``(between rows, between columns)`` in mm."""
        return self.frames[0].pixel_spacing

    def load(self) -> np.ndarray:
        """Decode the pixel data into a float32 array of shape :attr:`spatial_shape`, modality rescale applied.

        The array is cached, so later calls are free.

        Returns:
            The image values (e.g. Hounsfield units for CT).

        Raises:
            DicomInputError: When a file is truncated or corrupt, or its transfer syntax has no decoder installed.
        """
        if self._volume is None and self.channels > 1:  # a colour 2D image: (channels, columns, rows), no rescale
            ds = _read_pixels(self.files[0])
            pixels = np.asarray(_decode(ds, self.files[0]), dtype=np.float32)  # (rows, columns, channels), RGB
            self._volume = np.ascontiguousarray(pixels.transpose(2, 1, 0))
        if self._volume is None:
            columns, rows = self.spatial_shape[:2]
            volume = np.empty((columns, rows, len(self.frames)), dtype=np.float32)
            by_instance: dict[int, list[tuple[int, _Frame]]] = {}
            for k, frame in enumerate(self.frames):
                by_instance.setdefault(frame.instance, []).append((k, frame))
            for instance, items in by_instance.items():
                ds = _read_pixels(self.files[instance])
                pixels = _decode(ds, self.files[instance])
                if pixels.ndim == 2:
                    pixels = pixels[None]
                if pixels.shape[1:] != (rows, columns):
                    raise DicomInputError(
                        f"'{self.files[instance]}': pixel array of shape {pixels.shape[1:]} does not match Rows x "
                        f"Columns {rows} x {columns}."
                    )
                for k, frame in items:
                    plane = pixels[frame.frame or 0]
                    if ds.get("ModalityLUTSequence") and frame.frame is None:
                        values = pydicom.pixels.apply_modality_lut(plane, ds)
                    else:
                        values = plane * frame.slope + frame.intercept
                    volume[:, :, k] = np.asarray(values, dtype=np.float32).T
            self._volume = volume if self.is_volume else volume[:, :, 0]
        return self._volume

    def meta(self) -> dict[str, Any]:
        """Metadata in the form MONAI's readers give it (``affine``, ``spatial_shape``, ``space``, ...).

        Returns:
            A new dictionary, plus the series' identifiers (``series_instance_uid``, ``modality``, ...).
        """
        spacing = np.sqrt((self.affine[:3, : len(self.spatial_shape)] ** 2).sum(axis=0))
        return {
            MetaKeys.AFFINE: self.affine.copy(),
            MetaKeys.ORIGINAL_AFFINE: self.affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(self.spatial_shape),
            MetaKeys.SPACE: SpaceKeys.RAS,
            MetaKeys.ORIGINAL_CHANNEL_DIM: 0 if self.channels > 1 else float("nan"),
            "spacing": spacing,
            "series_instance_uid": self.series_uid,
            "study_instance_uid": self.study_uid,
            "modality": self.modality,
            "series_description": self.description,
        }

    def reference_datasets(self) -> list[Dataset]:
        """Copies of the headers with every UID needed to reference them (for SEG/SR writers such as highdicom).

        The copies are made once per series (deep copies of every header cost ~0.1 s for a 20-slice series, and an
        SR or SEG writer asks several times) and shared between calls: treat them as read-only.

        Returns:
            Headers in the order of :attr:`files`, with *SOP Class/Instance UID* (from the file meta header if
            the dataset has none) and the series' *Series*, *Study* and *Frame of Reference UIDs* filled in.

        Raises:
            DicomInputError: When an instance has no SOP Class UID anywhere.
        """
        if self._references is not None:
            return list(self._references)
        datasets = []
        for path, header in zip(self.files, self.headers, strict=True):
            ds = copy.deepcopy(header)
            meta = getattr(ds, "file_meta", Dataset())
            if not ds.get("SOPClassUID"):
                if not meta.get("MediaStorageSOPClassUID"):
                    raise DicomInputError(f"'{path}' has no SOP Class UID: it cannot be referenced by an output.")
                ds.SOPClassUID = meta.MediaStorageSOPClassUID
            if not ds.get("SOPInstanceUID"):
                ds.SOPInstanceUID = meta.get("MediaStorageSOPInstanceUID") or _derive_uid(
                    "instance", self.series_uid, os.path.basename(path)
                )
            ds.SeriesInstanceUID = self.series_uid
            ds.StudyInstanceUID = self.study_uid
            if self.frame_of_reference_uid:
                ds.FrameOfReferenceUID = self.frame_of_reference_uid
            datasets.append(ds)
        self._references = tuple(datasets)
        return datasets


def _derive_uid(kind: str, *parts: object) -> str:
    """A deterministic UID from ``parts`` (the same content always gives the same UID)."""
    return str(generate_uid(entropy_srcs=[f"monai_kd {kind}", *[str(p) for p in parts]]))


def _collect_files(input: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[str, list[str]]:
    """The files of an input: all files below a folder (sorted), a single file, or a list of files.

    Returns:
        A printable name of the input and its files.

    Raises:
        FileNotFoundError: When the input (or a listed file) does not exist.
        DicomInputError: When a folder holds no file at all.
    """
    if isinstance(input, (str, os.PathLike)):
        name, paths = os.fspath(input), [os.fspath(input)]
    else:
        paths = [os.fspath(p) for p in input]
        if not paths:
            raise DicomInputError("empty list of DICOM files.")
        name = paths[0] if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} files)"
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, names in os.walk(path):
                dirs.sort()
                files.extend(os.path.join(root, n) for n in sorted(names))
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise FileNotFoundError(f"DICOM input does not exist: '{path}'.")
    if not files:
        raise DicomInputError(f"input folder '{name}' is empty: expected DICOM files of one or more series.")
    return name, files


def _is_image(ds: Dataset) -> bool:
    """Whether a header (read without pixel data) describes an image of the patient."""
    if str(ds.get("Modality", "")).upper() in NON_IMAGE_MODALITIES:
        return False
    sop_class = ds.get("SOPClassUID") or getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID", "")
    return "Rows" in ds or "Image Storage" in UID(str(sop_class)).name


def _object_name(ds: Dataset) -> str:
    """A short name of a DICOM object for messages, e.g. ``'SR (Basic Text SR Storage)'``."""
    sop_class = ds.get("SOPClassUID") or getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID", "")
    return f"{ds.get('Modality', '?')} ({UID(str(sop_class)).name or 'unknown SOP class'})"


def _read_headers(name: str, files: list[str]) -> list[tuple[str, Dataset]]:
    """Read the headers (no pixel data) of the DICOM image files among ``files``.

    Raises:
        DicomInputError: When no file is DICOM, no DICOM object is an image, or a DICOM file is unreadable.
    """
    images: list[tuple[str, Dataset]] = []
    non_images: list[str] = []
    for path in files:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if not is_dicom(path):
                    continue
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception as e:  # pydicom raises many types on corrupt headers
                raise DicomInputError(f"'{path}' is not a readable DICOM file (truncated or corrupt?): {e}") from e
        problems = [str(w.message) for w in caught if "end of file" in str(w.message).lower()]
        if not problems and not (
            ds.get("SOPClassUID") or getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID")
        ):
            problems = ["no SOP Class UID"]
        if problems:
            raise DicomInputError(f"'{path}' is not a readable DICOM file (truncated or corrupt?): {problems[0]}")
        if not _is_image(ds):
            non_images.append(f"{os.path.basename(path)}: {_object_name(ds)}")
            continue
        if "Rows" not in ds or "Columns" not in ds:
            raise DicomInputError(
                f"'{path}' is a {_object_name(ds)} object without Rows/Columns: the file is truncated or corrupt."
            )
        images.append((path, ds))
    if images:
        return images
    if non_images:
        listed = "; ".join(non_images[:5]) + (" ..." if len(non_images) > 5 else "")
        raise DicomInputError(f"no DICOM image in '{name}': only non-image DICOM objects ({listed}).")
    raise DicomInputError(
        f"no DICOM file in '{name}' ({len(files)} file(s), none with the DICOM 'DICM' preamble); "
        "give a folder of DICOM series, a DICOM file, or a NIfTI file."
    )


def _series_key(ds: Dataset) -> tuple[str, ...]:
    """Grouping key of an instance: its Series Instance UID, or identifying attributes when that is empty."""
    uid = str(ds.get("SeriesInstanceUID", "") or "")
    if uid:
        return (uid,)
    return (
        "",
        str(ds.get("StudyInstanceUID", "") or ""),
        str(ds.get("FrameOfReferenceUID", "") or ""),
        str(ds.get("Modality", "") or ""),
        str(ds.get("SeriesNumber", "") or ""),
        str(ds.get("SeriesDescription", "") or ""),
    )


def _group(images: list[tuple[str, Dataset]]) -> list[tuple[SeriesSummary, list[tuple[str, Dataset]]]]:
    """Group image instances into series, in order of first appearance."""
    groups: dict[tuple[str, ...], list[tuple[str, Dataset]]] = {}
    for path, ds in images:
        groups.setdefault(_series_key(ds), []).append((path, ds))
    result = []
    for key, members in groups.items():
        first = members[0][1]
        derived = not key[0]
        if derived:
            instance_uids = sorted(
                str(
                    ds.get("SOPInstanceUID")
                    or getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPInstanceUID", "")
                )
                or os.path.basename(p)
                for p, ds in members
            )
            uid = _derive_uid("series", *key, *instance_uids)
        else:
            uid = key[0]
        number = first.get("SeriesNumber")
        summary = SeriesSummary(
            series_uid=uid,
            modality=str(first.get("Modality", "") or ""),
            description=str(first.get("SeriesDescription", "") or ""),
            series_number=None if number in (None, "") else int(number),
            files=tuple(p for p, _ in members),
            uid_derived=derived,
        )
        result.append((summary, members))
    return result


def list_series(input: str | os.PathLike | Sequence[str | os.PathLike]) -> list[SeriesSummary]:
    """The DICOM image series in an input (headers only).

    Args:
        input: a folder (searched recursively), a DICOM file, or a list of DICOM files.

    Returns:
        One summary per series, in order of first appearance in the sorted file list.

    Raises:
        FileNotFoundError: When the input does not exist.
        DicomInputError: When the input holds no DICOM image or a DICOM file is unreadable.
    """
    name, files = _collect_files(input)
    return [summary for summary, _ in _group(_read_headers(name, files))]


def _select(
    name: str,
    groups: list[tuple[SeriesSummary, list[tuple[str, Dataset]]]],
    modality: str | None,
    description: str | None,
    series_uid: str | None,
) -> tuple[SeriesSummary, list[tuple[str, Dataset]]]:
    """Pick the single series matching the selectors.

    Raises:
        DicomInputError: When no series or several series match.
    """
    criteria = []
    matching = groups
    if series_uid:
        matching = [g for g in matching if g[0].series_uid == str(series_uid).strip()]
        criteria.append(f"series_uid={series_uid}")
    if modality:
        matching = [g for g in matching if g[0].modality.upper() == str(modality).strip().upper()]
        criteria.append(f"modality={modality}")
    if description:
        matching = [g for g in matching if str(description).strip().lower() in g[0].description.lower()]
        criteria.append(f"description contains '{description}'")
    listing = "\n".join(f"  - {g[0]}" for g in groups)
    if len(matching) == 1:
        return matching[0]
    if not matching:
        raise DicomInputError(f"no series in '{name}' matches {', '.join(criteria)}; series found:\n{listing}")
    if not criteria:
        raise DicomInputError(
            f"'{name}' holds {len(groups)} DICOM series; choose one with --modality, --description or "
            f"--series_uid:\n{listing}"
        )
    found = "\n".join(f"  - {g[0]}" for g in matching)
    raise DicomInputError(
        f"{len(matching)} series in '{name}' match {', '.join(criteria)}; narrow the choice (e.g. --series_uid):\n"
        f"{found}"
    )


def _floats(value: Any, count: int, what: str, path: str) -> np.ndarray:
    """A multi-valued numeric attribute as a float array of ``count`` finite values."""
    try:
        array = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DicomInputError(f"'{path}': invalid {what} {value!r}.") from e
    if array.shape != (count,) or not np.isfinite(array).all():
        raise DicomInputError(f"'{path}': invalid {what} {value!r} (expected {count} finite numbers).")
    return array


def _item(ds: Dataset, sequence: str) -> Dataset | None:
    """The first item of a (functional group) sequence, or None."""
    seq = ds.get(sequence)
    return seq[0] if seq else None


def _functional(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """Item of a functional group macro for one frame: per-frame first, then shared."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and frame < len(per_frame):
        item = _item(per_frame[frame], sequence)
        if item is not None:
            return item
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    return _item(shared, sequence) if shared is not None else None


def _spacing(ds: Dataset | None, path: str) -> tuple[float, float] | None:
    """*Pixel Spacing* (or *Imager Pixel Spacing* of projection images) as ``(rows, columns)`` mm, if present."""
    if ds is None:
        return None
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        if ds.get(keyword):
            dr, dc = _floats(ds.get(keyword), 2, keyword, path)
            if dr <= 0 or dc <= 0:
                raise DicomInputError(f"'{path}': non-positive {keyword} {list(ds.get(keyword))}.")
            return float(dr), float(dc)
    return None


def _optional_floats(item: Dataset | None, keyword: str, count: int, path: str) -> np.ndarray | None:
    """A numeric attribute of ``item`` as ``count`` floats, or None when the item or the attribute is absent."""
    if item is None or not item.get(keyword):
        return None
    return _floats(item.get(keyword), count, keyword, path)


def _frames_of(index: int, path: str, ds: Dataset) -> list[_Frame]:
    """One :class:`_Frame` per frame of an instance, with its geometry and rescale."""
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    if ds.get("DoseGridScaling"):  # RT Dose: stored values x scaling = dose (Gy)
        slope = float(ds.DoseGridScaling)
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:  # enhanced multi-frame
        frames = []
        for f in range(n_frames):
            rescale = _functional(ds, f, "PixelValueTransformationSequence")
            measures = _functional(ds, f, "PixelMeasuresSequence")
            position = _functional(ds, f, "PlanePositionSequence")
            orientation = _functional(ds, f, "PlaneOrientationSequence")
            frames.append(
                _Frame(
                    instance=index,
                    frame=f,
                    position=_optional_floats(position, "ImagePositionPatient", 3, path),
                    orientation=_optional_floats(orientation, "ImageOrientationPatient", 6, path),
                    pixel_spacing=_spacing(measures, path) or _spacing(ds, path) or (1.0, 1.0),
                    slope=slope if rescale is None else float(rescale.get("RescaleSlope", 1) or 1),
                    intercept=intercept if rescale is None else float(rescale.get("RescaleIntercept", 0) or 0),
                )
            )
        return frames
    spacing = _spacing(ds, path) or (1.0, 1.0)
    position = _optional_floats(ds, "ImagePositionPatient", 3, path)
    orientation = _optional_floats(ds, "ImageOrientationPatient", 6, path)
    if position is None or orientation is None:
        position = orientation = None
    if n_frames == 1:
        return [_Frame(index, None, position, orientation, spacing, slope, intercept)]
    offsets = ds.get("GridFrameOffsetVector")
    if position is None or orientation is None or not offsets or len(offsets) != n_frames:
        raise DicomInputError(
            f"'{path}' is a multi-frame image ({n_frames} frames) without per-frame positions (no functional groups "
            "or GridFrameOffsetVector): it cannot be placed as a 3D volume."
        )
    normal = np.cross(orientation[:3], orientation[3:])
    offsets = _floats(offsets, n_frames, "GridFrameOffsetVector", path)
    return [
        _Frame(index, f, position + (offsets[f] - offsets[0]) * normal, orientation, spacing, slope, intercept)
        for f in range(n_frames)
    ]


def _check_uniform(frames: list[_Frame], files: Sequence[str], what: str, values: list[Any], atol: float) -> None:
    """Refuse a series whose images differ in ``what`` (orientation, spacing)."""
    reference = np.asarray(values[0], dtype=np.float64)
    for frame, value in zip(frames, values, strict=True):
        if not np.allclose(np.asarray(value, dtype=np.float64), reference, atol=atol):
            where = files[frame.instance] + ("" if frame.frame is None else f" frame {frame.frame + 1}")
            raise DicomInputError(
                f"mixed {what} in one series: {np.round(reference, 6).tolist()} in '{files[frames[0].instance]}' but "
                f"{np.round(np.asarray(value, dtype=np.float64), 6).tolist()} in '{where}'; refusing to stack images "
                "that do not form one volume (select a single acquisition/reformat)."
            )


def _stack_geometry(
    frames: list[_Frame], files: Sequence[str], headers: Sequence[Dataset]
) -> tuple[list[_Frame], np.ndarray]:
    """Sort frames along the slice normal, check they form a regular volume, and build its LPS affine.

    Returns:
        The frames in volume order and the 4x4 LPS affine for axes ``(column, row, slice)``.

    Raises:
        DicomInputError: On missing geometry, mixed orientation or spacing, duplicate positions, uneven spacing
            (a missing slice) or positions off a straight line.
    """
    missing = [f for f in frames if f.position is None or f.orientation is None]
    if missing:
        where = files[missing[0].instance]
        raise DicomInputError(
            f"{len(frames)} images of one series but '{where}' has no ImagePositionPatient/ImageOrientationPatient: "
            "the images cannot be stacked into a volume."
        )
    _check_uniform(
        frames, files, "image orientations (ImageOrientationPatient)", [f.orientation for f in frames], ORIENTATION_TOL
    )
    _check_uniform(frames, files, "pixel spacings (PixelSpacing)", [f.pixel_spacing for f in frames], 1e-4)
    orientation = frames[0].orientation
    row_cos, col_cos = orientation[:3], orientation[3:]  # type: ignore[index]
    if (
        abs(np.linalg.norm(row_cos) - 1) > 1e-2
        or abs(np.linalg.norm(col_cos) - 1) > 1e-2
        or abs(row_cos @ col_cos) > 1e-2
    ):
        raise DicomInputError(
            f"'{files[frames[0].instance]}': ImageOrientationPatient {orientation.tolist()} is not two orthogonal "  # type: ignore[union-attr]
            "unit vectors."
        )
    normal = np.cross(row_cos, col_cos)
    distance = np.asarray([f.position @ normal for f in frames])  # type: ignore[operator]
    order = np.argsort(distance, kind="stable")
    frames = [frames[i] for i in order]
    distance = distance[order]
    positions = np.stack([f.position for f in frames])  # type: ignore[misc]
    dr, dc = frames[0].pixel_spacing
    if len(frames) == 1:
        header = headers[frames[0].instance]
        thickness = header.get("SpacingBetweenSlices") or header.get("SliceThickness") or 1.0
        step = normal * abs(float(thickness))
    else:
        gaps = np.diff(distance)
        tiny = np.flatnonzero(gaps < POSITION_TOL_MM)
        if tiny.size:
            a, b = frames[tiny[0]], frames[tiny[0] + 1]
            raise DicomInputError(
                f"two images at the same position {distance[tiny[0]]:.3f} mm along the slice normal "
                f"('{files[a.instance]}', '{files[b.instance]}'): the series holds several acquisitions, phases or "
                "echoes; refusing to stack them (select one with --series_uid, or split the series)."
            )
        nominal = float(np.median(gaps))
        uneven = np.flatnonzero(np.abs(gaps - nominal) > SPACING_RTOL * nominal + POSITION_TOL_MM)
        if uneven.size:
            i = int(uneven[0])
            missing_count = gaps[i] / nominal - 1
            hint = f" ({missing_count:.0f} slice(s) missing?)" if missing_count > 0.5 else ""
            raise DicomInputError(
                f"uneven slice spacing: images at {distance[i]:.3f} mm and {distance[i + 1]:.3f} mm along the slice "
                f"normal are {gaps[i]:.3f} mm apart but the series step is {nominal:.3f} mm{hint}; refusing to stack "
                f"an incomplete or irregular series ('{files[frames[i].instance]}', '{files[frames[i + 1].instance]}')."
            )
        step = (positions[-1] - positions[0]) / (len(frames) - 1)
        expected = positions[0] + np.arange(len(frames))[:, None] * step
        offset = np.linalg.norm(positions - expected, axis=1)
        if offset.max() > SPACING_RTOL * nominal + POSITION_TOL_MM:
            k = int(offset.argmax())
            raise DicomInputError(
                f"slice positions are not on a straight line: '{files[frames[k].instance]}' is {offset[k]:.3f} mm off; "
                "refusing to stack images that do not form one regular volume."
            )
    affine = np.eye(4)
    affine[:3, 0] = row_cos * dc
    affine[:3, 1] = col_cos * dr
    affine[:3, 2] = step
    affine[:3, 3] = positions[0]
    return frames, affine


def load_dicom_series(
    input: str | os.PathLike | Sequence[str | os.PathLike],
    modality: str | None = None,
    description: str | None = None,
    series_uid: str | None = None,
) -> DicomSeries:
    """Select one DICOM image series from an input and check its geometry (headers only).

    Args:
        input: a folder (searched recursively), a DICOM file (single image or multi-frame), or a list of files.
        modality: keep series of this *Modality* (case-insensitive), e.g. ``"CT"``.
        description: keep series whose *Series Description* contains this text (case-insensitive).
        series_uid: keep the series with this *Series Instance UID* (or the derived UID that
            :func:`list_series` reports for series without one).

    Returns:
        The selected series; call :meth:`DicomSeries.load` for the pixel values.

    Raises:
        FileNotFoundError: When the input does not exist.
        DicomInputError: When the input has no DICOM image, no or several series match, or the images do not
            form a regular volume (see the module docstring).
    """
    name, files = _collect_files(input)
    summary, members = _select(name, _group(_read_headers(name, files)), modality, description, series_uid)
    paths = [p for p, _ in members]
    headers = [ds for _, ds in members]
    _check_uniform(
        [_Frame(i, None, None, None, (0, 0)) for i in range(len(headers))],
        paths,
        "image sizes (Rows, Columns)",
        [(int(ds.Rows), int(ds.Columns)) for ds in headers],
        0,
    )
    for path, ds in members:
        colour_photo = len(members) == 1 and int(ds.get("NumberOfFrames", 1) or 1) == 1 and "ImagePositionPatient" not in ds
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1 and not colour_photo:
            raise DicomInputError(
                f"'{path}' is a colour image ({ds.get('PhotometricInterpretation')}) in a series or volume; colour is "
                "supported for single 2D images (e.g. photographs), volumes must be single-sample (grey-scale)."
            )
    frames = [frame for i, (path, ds) in enumerate(members) for frame in _frames_of(i, path, ds)]
    multiframe = [p for p, ds in members if int(ds.get("NumberOfFrames", 1) or 1) > 1]
    if multiframe and len(members) > 1:
        raise DicomInputError(
            f"series {summary.series_uid} mixes a multi-frame image ('{multiframe[0]}') with other instances; "
            "give the multi-frame file on its own."
        )
    rows, columns = int(headers[0].Rows), int(headers[0].Columns)
    if len(frames) == 1 and (frames[0].position is None or frames[0].orientation is None):
        dr, dc = frames[0].pixel_spacing
        affine, shape = np.diag([dc, dr, 1.0, 1.0]), (columns, rows)  # a 2D image without patient geometry
    else:
        frames, lps = _stack_geometry(frames, paths, headers)
        affine, shape = orientation_ras_lps(lps), (columns, rows, len(frames))
    if not multiframe:  # single-frame instances: files in volume order
        order = [f.instance for f in frames]
        paths, headers = [paths[i] for i in order], [headers[i] for i in order]
        frames = [
            _Frame(k, None, f.position, f.orientation, f.pixel_spacing, f.slope, f.intercept)
            for k, f in enumerate(frames)
        ]

    first = headers[0]
    derived = ["SeriesInstanceUID"] if summary.uid_derived else []
    study_uid = str(first.get("StudyInstanceUID", "") or "")
    if not study_uid:
        derived.append("StudyInstanceUID")
        study_uid = _derive_uid(
            "study",
            *(first.get(k, "") for k in ("PatientID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID")),
            first.get("FrameOfReferenceUID", ""),
            summary.series_uid,
        )
    frame_of_reference = str(first.get("FrameOfReferenceUID", "") or "")
    if not frame_of_reference and len(shape) == 3:
        derived.append("FrameOfReferenceUID")
        frame_of_reference = _derive_uid("frame of reference", summary.series_uid)
    if derived:
        warnings.warn(
            f"DICOM series in '{name}' has empty {', '.join(derived)} (anonymised?); outputs reference derived "
            f"UID(s) instead (series {summary.series_uid}, study {study_uid}).",
            stacklevel=2,
        )
    return DicomSeries(
        source=name,
        files=tuple(paths),
        headers=tuple(headers),
        frames=tuple(frames),
        affine=affine,
        spatial_shape=shape,
        series_uid=summary.series_uid,
        study_uid=study_uid,
        frame_of_reference_uid=frame_of_reference,
        modality=summary.modality,
        description=summary.description,
        derived_uids=tuple(derived),
    )


def _read_pixels(path: str) -> Dataset:
    """Read a whole DICOM file, refusing a file that ends before its pixel data does."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path)
        except Exception as e:
            raise DicomInputError(f"'{path}' is not a readable DICOM file (truncated or corrupt?): {e}") from e
    truncated = [str(w.message) for w in caught if "end of file" in str(w.message).lower()]
    if truncated or not any(tag in ds for tag in _PIXEL_TAGS):
        reason = truncated[0] if truncated else "no pixel data"
        raise DicomInputError(f"'{path}' is truncated or corrupt ({reason}): re-export or remove it.")
    return ds


def _decode(ds: Dataset, path: str) -> np.ndarray:
    """Decode the pixel data of a dataset, with a clear message when no decoder is installed."""
    syntax = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
    try:
        return ds.pixel_array
    except Exception as e:
        name = f"{UID(str(syntax)).name} ({syntax})" if syntax else "an unknown transfer syntax"
        if isinstance(e, (NotImplementedError, RuntimeError)) or "plugin" in str(e).lower():
            raise DicomInputError(
                f"cannot decode '{path}': its pixel data uses {name}, for which no decoder is installed; "
                "JPEG 2000: pip install pylibjpeg pylibjpeg-openjpeg (or Pillow built with OpenJPEG), JPEG / JPEG "
                f"lossless: pylibjpeg-libjpeg, JPEG-LS: pyjpegls. Details: {e}"
            ) from e
        raise DicomInputError(f"cannot decode the pixel data of '{path}' ({name}; truncated or corrupt?): {e}") from e


class DicomSeriesReader(ImageReader):
    """MONAI :class:`~monai.data.ImageReader` for a DICOM series, selected and checked by :func:`load_dicom_series`.

    Registering it on a bundle's own loader lets the bundle's ``preprocessing`` run unchanged on DICOM input::

        loader = LoadImaged(keys="image", ensure_channel_first=True)
        loader.register(DicomSeriesReader(modality="CT"))
        data = loader({"image": "dicom_folder/"})  # (1, columns, rows, slices), RAS affine

    Args:
        modality: series selector, see :func:`load_dicom_series`.
        description: series selector.
        series_uid: series selector.
        series: an already selected series to return for its own source (avoids scanning the input again).
    """

    def __init__(
        self,
        modality: str | None = None,
        description: str | None = None,
        series_uid: str | None = None,
        series: DicomSeries | None = None,
    ) -> None:
        super().__init__()
        self.selectors = {"modality": modality, "description": description, "series_uid": series_uid}
        self.series = series

    def _is_own_source(self, names: Sequence[str | os.PathLike]) -> bool:
        """Whether ``names`` is the input the pre-selected :attr:`series` came from."""
        if self.series is None or len(names) != 1:
            return False
        return Path(names[0]).expanduser().resolve() == Path(self.series.source).expanduser().resolve()

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """Whether ``filename`` is a folder or DICOM file(s) (NIfTI and other files are left to other readers)."""
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        if not names:
            return False
        if self._is_own_source(names):
            return True
        return all(os.path.isdir(n) or (os.path.isfile(n) and is_dicom(n)) for n in names)

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> DicomSeries:
        """Select and check the series (see :func:`load_dicom_series`); pixel data is decoded by :meth:`get_data`."""
        names = [data] if isinstance(data, (str, os.PathLike)) else list(data)
        if self._is_own_source(names):
            return self.series  # type: ignore[return-value]
        return load_dicom_series(names[0] if len(names) == 1 else names, **self.selectors)

    def get_data(self, img: DicomSeries) -> tuple[np.ndarray, dict]:
        """A copy of the volume (``(columns, rows, slices)``, float32, rescaled) and its MONAI metadata (RAS affine)."""
        return img.load().copy(), img.meta()
