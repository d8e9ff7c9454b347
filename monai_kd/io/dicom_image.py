# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""A volume (e.g. a NIfTI image) as a DICOM image series with its geometry, one single-frame instance per slice.

The inverse of :meth:`~monai_kd.io.dicom_series.DicomSeries.load`: the volume has axes ``(column, row, slice)``
and a RAS voxel-to-world affine (what nibabel and MONAI give for a NIfTI file). Slice ``k`` becomes the image
``volume[:, :, k].T`` (rows x columns) with

- *Image Orientation (Patient)*: the first two affine columns in LPS, normalised (row cosines = direction of
  increasing column index, column cosines = direction of increasing row index);
- *Pixel Spacing*: the lengths of those columns (between rows, between columns);
- *Image Position (Patient)*: ``affine @ (0, 0, k, 1)`` in LPS; *Slice Thickness* and *Spacing Between Slices*:
  the length of the third column.

So reading the series back (:func:`~monai_kd.io.dicom_series.load_dicom_series`) gives the same world
geometry; it gives the same array and affine when the third affine column points along the slice normal (row x
column cosines), and the slices in reverse order with the matching affine otherwise. Sheared affines (a slice
step not perpendicular to the slices) are written as they are, as a gantry tilt would be.

Pixel values are stored as unsigned 16-bit integers: ``round((value - low) / (high - low) * 65535)`` with
``low``/``high`` the volume's minimum and maximum (an affine intensity map: the image keeps its contrast and
its minimum maps to 0). Writing to the MR Image IOD, which has no *Rescale Slope/Intercept*, this is what a
scanner's export does too; the map is recorded in the returned :class:`DicomSeriesInfo`. CT and other
modalities with a modality LUT get *Rescale Slope/Intercept* that restore the original values.

Every file is written atomically (temporary file, then rename) with new UIDs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
from monai.data.utils import orientation_ras_lps
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from .atomic import atomic_paths

__all__ = ["DicomSeriesInfo", "SOP_CLASSES", "write_dicom_series"]

SOP_CLASSES = {
    "MR": pydicom.uid.MRImageStorage,
    "CT": pydicom.uid.CTImageStorage,
}
MAX_STORED = 65535  # unsigned 16-bit


@dataclass(frozen=True)
class DicomSeriesInfo:
    """What :func:`write_dicom_series` wrote.

    Attributes:
        files: the instance files, in slice order of the input volume.
        series_uid: *Series Instance UID*.
        study_uid: *Study Instance UID*.
        frame_of_reference_uid: *Frame of Reference UID*.
        slope: stored value -> original value is ``stored * slope + intercept``.
        intercept: see ``slope``.
    """

    files: tuple[str, ...]
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    slope: float
    intercept: float


def _geometry(affine: np.ndarray) -> tuple[list[float], list[float], float, np.ndarray]:
    """Orientation cosines, pixel spacing, slice step and the LPS affine of a RAS voxel-to-world affine."""
    lps = orientation_ras_lps(np.asarray(affine, dtype=np.float64))
    columns = lps[:3, :3]
    lengths = np.linalg.norm(columns, axis=0)
    if np.any(lengths <= 0) or abs(np.linalg.det(columns)) < 1e-9:
        raise ValueError(f"the affine is singular: {affine.tolist()}")
    cosines = columns[:, :2] / lengths[:2]
    orientation = [float(v) for v in (*cosines[:, 0], *cosines[:, 1])]
    spacing = [float(lengths[1]), float(lengths[0])]  # between rows (row index = volume axis 1), between columns
    return orientation, spacing, float(lengths[2]), lps


def write_dicom_series(
    volume: np.ndarray,
    affine: np.ndarray,
    output_dir: str | os.PathLike,
    modality: str = "MR",
    series_description: str = "",
    patient_id: str = "ANONYMOUS",
    patient_name: str = "Anonymous^Patient",
    study_uid: str | None = None,
    series_number: int = 1,
    protect: str | os.PathLike | tuple[str | os.PathLike, ...] = (),
) -> DicomSeriesInfo:
    """Write a 3D volume as a DICOM image series, files ``IM0001.dcm`` ... in ``output_dir``.

    Args:
        volume: array of shape ``(columns, rows, slices)``.
        affine: 4x4 voxel-to-world matrix in RAS (e.g. ``nibabel.load(path).affine``).
        output_dir: folder for the files (created if missing; existing files of the same names are replaced).
        modality: ``MR`` (MR Image Storage) or ``CT`` (CT Image Storage, values in HU restored by rescale).
        series_description: *Series Description*, e.g. ``FLAIR``.
        patient_id: *Patient ID*.
        patient_name: *Patient's Name* (DICOM form ``Family^Given``).
        study_uid: *Study Instance UID*, to put several series in one study; a new UID by default.
        series_number: *Series Number*.
        protect: input files or folders the output must not overwrite or lie in (e.g. the source NIfTI).

    Returns:
        The files and UIDs written, and the intensity map.

    Raises:
        ValueError: When the volume is not 3D, is not finite, the affine is not 4x4 or singular, or the modality
            is not supported.
    """
    volume = np.asarray(volume)
    affine = np.asarray(affine, dtype=np.float64)
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise ValueError(f"expected a volume of shape (columns, rows, slices), got {volume.shape}.")
    if affine.shape != (4, 4):
        raise ValueError(f"expected a 4x4 affine, got shape {affine.shape}.")
    if modality not in SOP_CLASSES:
        raise ValueError(f"modality '{modality}' is not supported; use one of {sorted(SOP_CLASSES)}.")
    if not np.all(np.isfinite(volume)):
        raise ValueError("the volume has NaN or infinite values.")
    orientation, spacing, step, lps = _geometry(affine)
    low, high = float(volume.min()), float(volume.max())
    slope = (high - low) / MAX_STORED if high > low else 1.0
    stored = np.rint((volume.astype(np.float64) - low) / slope).clip(0, MAX_STORED).astype(np.uint16)
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    now = datetime.now()
    common = _common_dataset(modality, series_description, patient_id, patient_name, study_uid, series_uid)
    common.SeriesNumber = series_number
    common.FrameOfReferenceUID = frame_uid
    common.ContentDate, common.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    common.ImageOrientationPatient = [round(v, 8) for v in orientation]
    common.PixelSpacing = [round(v, 6) for v in spacing]
    common.SliceThickness = round(step, 6)
    common.SpacingBetweenSlices = round(step, 6)
    common.Rows, common.Columns = int(volume.shape[1]), int(volume.shape[0])
    if modality == "MR":
        window = stored[stored > 0] if np.any(stored > 0) else stored
        common.WindowCenter = int(np.percentile(window, 50))
        common.WindowWidth = max(int(np.percentile(window, 99.5) - np.percentile(window, 0.5)), 1)
    else:
        common.RescaleSlope, common.RescaleIntercept, common.RescaleType = f"{slope:.10g}", f"{low:.10g}", "HU"
    out = Path(output_dir)
    targets = [out / f"IM{k + 1:04d}.dcm" for k in range(volume.shape[2])]
    with atomic_paths(*targets, protect=protect) as temps:
        for k, temp in enumerate(temps):
            ds = _slice_dataset(common, stored[:, :, k], lps, k)
            ds.save_as(temp, enforce_file_format=True)
    return DicomSeriesInfo(tuple(map(str, targets)), series_uid, study_uid, frame_uid, slope, low)


def _common_dataset(
    modality: str, description: str, patient_id: str, patient_name: str, study_uid: str, series_uid: str
) -> Dataset:
    """Attributes shared by every instance: patient, study, series, equipment, image pixel and MR/CT image."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SOP_CLASSES[modality]
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient_name, patient_id, "", ""
    now = datetime.now()
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study_uid, now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "", "1", ""
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesDescription = modality, series_uid, description
    ds.PatientPosition, ds.Laterality = "HFS", ""
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "MONAI KD"
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"] if modality == "MR" else ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.BurnedInAnnotation = "NO"
    if modality == "MR":  # acquisition parameters are unknown for a converted volume: "research mode", type 2 empty
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "RM", "NONE", "", ""
        ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "", "", ""
    else:
        ds.KVP, ds.AcquisitionNumber = "", ""
    return ds


def _slice_dataset(common: Dataset, plane: np.ndarray, lps: np.ndarray, k: int) -> Dataset:
    """One instance: the shared attributes plus the slice's UID, number, position and pixels."""
    ds = Dataset()
    ds.update(common)
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = k + 1
    position = lps @ np.array([0.0, 0.0, float(k), 1.0])
    ds.ImagePositionPatient = [round(float(v), 6) for v in position[:3]]
    ds.SliceLocation = round(float(np.dot(position[:3], _normal(common.ImageOrientationPatient))), 6)
    ds.PixelData = np.ascontiguousarray(plane.T).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _normal(orientation: list[float]) -> np.ndarray:
    """Slice normal (row cosines x column cosines)."""
    values = np.asarray(orientation, dtype=np.float64)
    return np.cross(values[:3], values[3:])
