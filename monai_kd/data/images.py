"""Datalists of image files (PNG, NIfTI, DICOM files) for inference."""

from __future__ import annotations

import glob
import os


def image_datalist(image_dir: str | os.PathLike, pattern: str = "*.png", key: str = "image") -> list[dict]:
    """List the files in ``image_dir`` matching ``pattern`` as MONAI datalist items ``{key: path}``.

    Args:
        image_dir: folder holding the images (searched recursively when ``pattern`` contains ``**``).
        pattern: glob pattern relative to ``image_dir``, e.g. ``"*.png"``, ``"**/*.nii.gz"``.
        key: dictionary key of each item.

    Raises:
        FileNotFoundError: ``image_dir`` does not exist.
        ValueError: no file matches ``pattern``.
    """
    folder = os.fspath(image_dir)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder does not exist: '{folder}' (set dataset_dir).")
    files = sorted(f for f in glob.glob(os.path.join(folder, pattern), recursive=True) if os.path.isfile(f))
    if not files:
        raise ValueError(f"no file matching '{pattern}' in '{folder}' (set dataset_dir / image_pattern).")
    return [{key: f} for f in files]
