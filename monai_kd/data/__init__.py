# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Datalists for knowledge-distillation experiments.

- :func:`medmnist_datalist`: one split of a MedMNIST ``.npz`` archive as in-memory arrays,
  optionally a seeded class-stratified fraction for few-label experiments.
- :func:`datalist_split`: train/val/test items of a Decathlon-style datalist JSON
  (NIfTI files or DICOM folders), explicit or seeded partition.
- :func:`image_datalist`: image files in a folder, for inference.
- :func:`brats_slice_datalist` / :func:`brats_volume_datalist`: BraTS axial slices ("tumour present" label and
  whole-tumour mask) or volumes per contrast, split by patient, with labelled/unlabelled roles.
- :func:`shifted_medmnist_datalist`: MedMNIST under named acquisition shifts (:data:`DOMAINS`), disjoint per domain.
- :func:`held_out_role`: a seeded, stratified held-out role of a split (MMKD's quiz set), disjoint from the rest.
- :class:`DatalistProvider`: a bundle's data by role, from the user's datalist JSON (``--datalist``) or the bundle's
  benchmark (:class:`MedMNISTBenchmark`, :class:`BratsSliceBenchmark`, ...); :mod:`.readers` reads the files.
- :class:`VolumeSliceDataset`: 2D slice items, also from 3D image/label files (e.g. a MONAI Label datastore).
"""

from __future__ import annotations

from .brats_slices import BRATS_CONTRASTS, brats_slice_datalist, brats_volume_datalist
from .datalist import datalist_split
from .domain_shift import DOMAINS, AcquisitionShift, domain_partition, shifted_medmnist_datalist
from .images import image_datalist
from .medmnist import MEDMNIST_CLASSES, medmnist_class_names, medmnist_datalist
from .provider import (
    BratsSliceBenchmark,
    BratsVolumeBenchmark,
    DatalistProvider,
    MedMNISTBenchmark,
    ShiftedMedMNISTBenchmark,
    role_items,
)
from .roles import held_out_role
from .volume_slices import VolumeSliceDataset, volume_slices

__all__ = [
    "BratsSliceBenchmark",
    "BratsVolumeBenchmark",
    "DatalistProvider",
    "MedMNISTBenchmark",
    "ShiftedMedMNISTBenchmark",
    "role_items",
    "BRATS_CONTRASTS",
    "DOMAINS",
    "AcquisitionShift",
    "VolumeSliceDataset",
    "brats_slice_datalist",
    "brats_volume_datalist",
    "datalist_split",
    "domain_partition",
    "held_out_role",
    "image_datalist",
    "MEDMNIST_CLASSES",
    "medmnist_class_names",
    "medmnist_datalist",
    "shifted_medmnist_datalist",
    "volume_slices",
]
