# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Datalists for knowledge-distillation experiments.

- :func:`medmnist_datalist`: one split of a MedMNIST ``.npz`` archive as in-memory arrays,
  optionally a seeded class-stratified fraction for few-label experiments.
- :func:`datalist_split`: train/val/test items of a Decathlon-style datalist JSON
  (NIfTI files or DICOM folders), explicit or seeded partition.
- :func:`image_datalist`: image files in a folder, for inference.
"""

from __future__ import annotations

from .datalist import datalist_split
from .images import image_datalist
from .medmnist import medmnist_datalist

__all__ = ["datalist_split", "image_datalist", "medmnist_datalist"]
