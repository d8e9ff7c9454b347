"""Datalists of image files (PNG, NIfTI, DICOM files) for inference."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence


def image_datalist(
    image_dir: str | os.PathLike, pattern: str | Sequence[str] = "*.png", key: str = "image"
) -> list[dict]:
    """List the files in ``image_dir`` matching ``pattern`` as MONAI datalist items ``{key: path}``.

    Args:
        image_dir: folder holding the images (searched recursively when a pattern contains ``**``).
        pattern: glob pattern relative to ``image_dir``, e.g. ``"*.png"``, ``"**/*.nii.gz"``, or several patterns
            (e.g. ``["*.nii.gz", "*.png"]``): the files matching any of them, each listed once.
        key: dictionary key of each item.

    Raises:
        FileNotFoundError: ``image_dir`` does not exist.
        ValueError: no file matches ``pattern``.
    """
    folder = os.fspath(image_dir)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder does not exist: '{folder}' (set dataset_dir).")
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    found = {f for p in patterns for f in glob.glob(os.path.join(folder, p), recursive=True) if os.path.isfile(f)}
    if not found:
        shown = patterns[0] if len(patterns) == 1 else patterns
        raise ValueError(f"no file matching '{shown}' in '{folder}' (set dataset_dir / image_pattern).")
    return [{key: f} for f in sorted(found)]
