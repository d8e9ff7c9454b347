# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""DICOM and NIfTI input/output for inference.

- :mod:`.dicom_series`: select a DICOM series from a folder or file, check its geometry, load it as a volume
  (also as a MONAI image reader).
- :mod:`.dicom_seg`: a label volume as a DICOM Segmentation (highdicom) referencing the source series.
- :mod:`.dicom_sr`: a classification result as a DICOM Comprehensive SR (TID 1500) referencing the source.
- :mod:`.derived`: what a SEG/SR needs and a slightly invalid source lacks (e.g. the de-identification method).
- :mod:`.atomic`: all-or-nothing output files, and refusal of outputs inside the input.
"""

from __future__ import annotations

from .atomic import OutputPathError, atomic_paths, check_output_dir
from .dicom_series import DicomInputError, DicomSeries, DicomSeriesReader, SeriesSummary, list_series, load_dicom_series

__all__ = [
    "DicomInputError",
    "DicomSeries",
    "DicomSeriesReader",
    "OutputPathError",
    "SeriesSummary",
    "atomic_paths",
    "check_output_dir",
    "list_series",
    "load_dicom_series",
]
