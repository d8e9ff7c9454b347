# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Datalists built from MedMNIST ``.npz`` archives.

The official MedMNIST files (https://medmnist.com, CC BY 4.0) are ``.npz`` archives holding
``{train,val,test}_images`` (uint8, ``(N, H, W)``, ``(N, H, W, 3)`` or ``(N, D, H, W)``) and
``{train,val,test}_labels`` (``(N, 1)`` or ``(N,)``).  :func:`medmnist_datalist` turns one
split into a list of dictionaries that can be fed directly to :class:`monai.data.Dataset`
or :class:`monai.data.CacheDataset` together with dictionary transforms.
"""

from __future__ import annotations

import functools
import os
import re
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["MEDMNIST_CLASSES", "medmnist_class_names", "medmnist_datalist"]

#: class names in label order of the MedMNIST archives this project uses (MedMNIST v2 ``INFO[flag]["label"]``)
MEDMNIST_CLASSES: dict[str, tuple[str, ...]] = {
    "pneumoniamnist": ("normal", "pneumonia"),
    "breastmnist": ("malignant", "normal, benign"),
    "adrenalmnist3d": ("normal", "hyperplasia"),
}

_SPLIT_ALIASES: dict[str, str] = {"train": "train", "val": "val", "validation": "val", "test": "test"}
_CHANNEL_LAST_SIZES = (1, 3)


def _normalize_split(split: str, where: str | os.PathLike) -> str:
    """Map ``split`` (or one of its aliases) to ``"train"``, ``"val"`` or ``"test"``.

    Args:
        split: requested split name.
        where: dataset path, only used in the error message.

    Returns:
        The canonical split name.

    Raises:
        ValueError: When ``split`` is not a known split name.
    """
    if not isinstance(split, str) or split not in _SPLIT_ALIASES:
        raise ValueError(
            f"Unknown split {split!r} for MedMNIST dataset {where}: expected one of "
            f"'train', 'val' (alias 'validation'), 'test'."
        )
    return _SPLIT_ALIASES[split]


def _check_fraction(fraction: float, where: str | os.PathLike) -> float:
    """Check that ``fraction`` is a number in the half-open interval (0, 1].

    Args:
        fraction: fraction of samples to keep.
        where: dataset path, only used in the error message.

    Returns:
        ``fraction`` as a Python float.

    Raises:
        ValueError: When ``fraction`` is not a real number in (0, 1].
    """
    valid_type = isinstance(fraction, (int, float, np.integer, np.floating)) and not isinstance(fraction, bool)
    if not valid_type or not 0.0 < float(fraction) <= 1.0:  # NaN fails the comparison too
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r} for MedMNIST dataset {where}.")
    return float(fraction)


def _resolve_npz(dataset_dir: str | os.PathLike, filename: str | None) -> Path:
    """Find the ``.npz`` archive designated by ``dataset_dir`` and ``filename``.

    Args:
        dataset_dir: folder holding MedMNIST ``.npz`` archive(s), or the path to one archive.
        filename: name of the archive inside ``dataset_dir`` (the ``.npz`` suffix may be omitted);
            required when the folder holds several archives.

    Returns:
        The path of an existing ``.npz`` file.

    Raises:
        FileNotFoundError: When the folder or file does not exist, or the folder holds no ``.npz``.
        ValueError: When the path is not an ``.npz`` file, or several archives match and
            ``filename`` is None.
    """
    path = Path(dataset_dir).expanduser()
    if not path.exists():
        kind = "file" if path.suffix == ".npz" else "folder"
        raise FileNotFoundError(f"MedMNIST dataset {kind} does not exist: {path}")
    if path.is_file():
        if path.suffix != ".npz":
            raise ValueError(f"MedMNIST dataset path is a file but not a .npz archive: {path}")
        if filename is not None and Path(filename).name not in (path.name, path.stem):
            raise ValueError(f"filename={filename!r} was given but dataset_dir is already the file {path}")
        return path

    available = sorted(p.name for p in path.glob("*.npz") if p.is_file())
    if filename is not None:
        candidate = path / filename
        if not candidate.is_file() and candidate.suffix != ".npz":
            candidate = path / f"{filename}.npz"
        if not candidate.is_file():
            raise FileNotFoundError(
                f"MedMNIST file {filename!r} does not exist in {path}; .npz files there: {available or 'none'}"
            )
        return candidate
    if not available:
        raise FileNotFoundError(f"No .npz file in MedMNIST dataset folder {path}")
    if len(available) > 1:
        raise ValueError(
            f"MedMNIST dataset folder {path} holds several .npz files {available}: "
            f"pass filename= to choose one."
        )
    return path / available[0]


def medmnist_class_names(dataset_dir: str | os.PathLike, filename: str | None = None) -> tuple[str, ...] | None:
    """Class names of the MedMNIST archive that ``dataset_dir`` / ``filename`` designate (``None``: not known).

    The archive is recognised by its MedMNIST name (``breastmnist.npz``, ``pneumoniamnist_64.npz``, ...).

    Args:
        dataset_dir: folder holding the archive, or the archive itself.
        filename: name of the archive inside ``dataset_dir``.
    """
    stem = re.sub(r"_\d+$", "", _resolve_npz(dataset_dir, filename).stem.lower())
    return MEDMNIST_CLASSES.get(stem)


@functools.lru_cache(maxsize=8)
def _load_split(path: str, mtime_ns: int, size: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read (and cache) the images and labels of one split of a MedMNIST archive.

    The cache key includes the file's modification time and size so that a rewritten file is
    read again. The returned arrays are read-only because they are shared between calls.

    Args:
        path: absolute path of the ``.npz`` archive.
        mtime_ns: modification time of the file in nanoseconds (cache key only).
        size: file size in bytes (cache key only).
        split: canonical split name, ``"train"``, ``"val"`` or ``"test"``.

    Returns:
        ``(images, labels)`` where ``labels`` is one-dimensional.

    Raises:
        ValueError: When the file is not a readable ``.npz`` archive, the split keys are missing,
            the labels are not one scalar per sample, or the image and label counts differ.
    """
    image_key, label_key = f"{split}_images", f"{split}_labels"
    with open(path, "rb") as f:
        head = f.read(6)
    if not head.startswith((b"PK", b"\x93NUMPY")):  # neither a zip (.npz) nor a .npy: NumPy would call it pickled
        shown = "is empty" if not head else f"starts with {head!r}"
        raise ValueError(f"MedMNIST file {path} is not a .npz archive (a .npz is a zip file; this file {shown}).")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        reason = " ".join(str(exc).split())
        raise ValueError(f"Cannot read MedMNIST file {path} as a .npz archive: {reason}") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"MedMNIST file {path} is a single .npy array, not a .npz archive.")
    with npz:
        present = sorted(npz.files)
        missing = [k for k in (image_key, label_key) if k not in present]
        if missing:
            raise ValueError(
                f"MedMNIST file {path} has no key(s) {missing} for split {split!r}; keys present: {present}"
            )
        try:
            images, labels = npz[image_key], npz[label_key]
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            reason = " ".join(str(exc).split())
            raise ValueError(f"Cannot read split {split!r} of MedMNIST file {path}: {reason}") from exc

    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(
            f"MedMNIST file {path}: {label_key} has shape {labels.shape}, expected (N,) or (N, 1) "
            f"(multi-label datasets are not supported)."
        )
    if len(images) != len(labels):
        raise ValueError(
            f"MedMNIST file {path}: split {split!r} has {len(images)} images ({image_key}) "
            f"but {len(labels)} labels ({label_key})."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.number) or not np.array_equal(labels, np.round(labels)):
            raise ValueError(f"MedMNIST file {path}: {label_key} must hold integer class indices, got {labels.dtype}.")
    labels = labels.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _to_channel_first(images: np.ndarray, path: str) -> np.ndarray:
    """Move or add the channel axis so that a batch of images becomes ``(N, C, *spatial)``.

    ``(N, H, W)`` and ``(N, D, H, W)`` get a singleton channel; channel-last arrays
    ``(N, H, W, C)`` and ``(N, D, H, W, C)`` with ``C`` in {1, 3} have it moved to axis 1.

    Args:
        images: batch of images, first axis indexes the samples.
        path: dataset path, only used in the error message.

    Returns:
        A C-contiguous channel-first view or copy of ``images``.

    Raises:
        ValueError: When the array shape is not one of the supported layouts.
    """
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4 and images.shape[-1] not in _CHANNEL_LAST_SIZES:
        return images[:, None]
    if images.ndim in (4, 5) and images.shape[-1] in _CHANNEL_LAST_SIZES:
        return np.ascontiguousarray(np.moveaxis(images, -1, 1))
    raise ValueError(
        f"MedMNIST file {path}: unsupported image array shape {images.shape}, expected (N, H, W), "
        f"(N, H, W, 3) or (N, D, H, W)."
    )


def _scale_to_unit(images: np.ndarray, path: str) -> np.ndarray:
    """Convert images to float32 in [0, 1].

    Args:
        images: uint8 (divided by 255), bool, or floating-point images already in [0, 1].
        path: dataset path, only used in the error message.

    Returns:
        A new float32 array.

    Raises:
        ValueError: When the dtype is unsupported or floating-point values lie outside [0, 1].
    """
    if images.dtype == np.uint8:
        out = images.astype(np.float32)
        out /= 255.0
        return out
    if images.dtype == np.bool_:
        return images.astype(np.float32)
    if np.issubdtype(images.dtype, np.floating):
        if not np.all((images >= 0.0) & (images <= 1.0)):  # also rejects NaN
            raise ValueError(f"MedMNIST file {path}: floating-point images must lie in [0, 1].")
        return images.astype(np.float32)
    raise ValueError(f"MedMNIST file {path}: unsupported image dtype {images.dtype}, expected uint8.")


def _stratified_indices(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Draw a seeded, class-stratified subset of sample indices.

    Args:
        labels: one-dimensional integer labels.
        fraction: fraction of every class to keep, in (0, 1].
        seed: seed of :func:`numpy.random.default_rng`.

    Returns:
        Sorted indices; every class present keeps ``max(1, round(fraction * count))`` samples.
    """
    if fraction >= 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        count = max(1, int(round(fraction * len(members))))
        chosen.append(rng.choice(members, size=count, replace=False))
    if not chosen:
        return np.arange(0)
    return np.sort(np.concatenate(chosen))


def medmnist_datalist(
    dataset_dir: str | os.PathLike,
    split: str,
    filename: str | None = None,
    fraction: float = 1.0,
    seed: int = 0,
    num_classes: int | None = None,
) -> list[dict]:
    """Load one split of a MedMNIST ``.npz`` archive as a list of dictionaries.

    Each item is ``{"image": ..., "label": ..., "index": ...}`` where ``image`` is a float32
    array in [0, 1] with a leading channel axis (``(1, H, W)`` for grey 2D images,
    ``(3, H, W)`` for RGB, ``(1, D, H, W)`` for 3D volumes), ``label`` is a ``numpy.int64``
    scalar and ``index`` is the row of the sample in the archive's split.

    Arrays read from an archive are cached per (path, modification time, size), so repeated
    calls (e.g. different fractions or seeds) do not read the file again.

    Example::

        from monai.data import Dataset
        from monai_kd.data import medmnist_datalist

        train = medmnist_datalist("/data/pneumoniamnist", "train", fraction=0.1, seed=0)
        ds = Dataset(train, transform=train_transforms)

    Args:
        dataset_dir: folder holding a MedMNIST ``.npz`` archive, or the path to the archive.
        split: ``"train"``, ``"val"`` (alias ``"validation"``) or ``"test"``.
        filename: archive name inside ``dataset_dir`` (``.npz`` optional), required when the
            folder holds several archives (e.g. ``"adrenalmnist3d_64.npz"``).
        fraction: fraction of the split to keep, in (0, 1]. Values below 1 keep a seeded,
            class-stratified random subset (at least one sample per class present), returned
            in original order; 1 keeps every sample in original order.
        seed: random seed of the subset selection, ignored when ``fraction`` is 1.
        num_classes: when given, every label must be in ``[0, num_classes)`` (a bundle passes its own class count,
            so an archive of another task is refused by name instead of failing inside the loss).

    Returns:
        A list of dictionaries, one per kept sample.

    Raises:
        FileNotFoundError: When the folder or file does not exist, or the folder holds no ``.npz``.
        ValueError: When ``split`` or ``fraction`` is invalid, the folder holds several archives
            and ``filename`` is None, the archive lacks the split's keys, the image and label
            counts differ, the split is empty, a label is outside ``[0, num_classes)``, or the arrays have an
            unsupported shape or dtype.
    """
    canonical = _normalize_split(split, dataset_dir)
    fraction = _check_fraction(fraction, dataset_dir)
    path = _resolve_npz(dataset_dir, filename).resolve()
    stat = path.stat()
    images, labels = _load_split(str(path), stat.st_mtime_ns, stat.st_size, canonical)
    if len(labels) == 0:
        raise ValueError(f"MedMNIST archive {path}: the '{canonical}' split is empty.")
    if num_classes is not None and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels[(labels < 0) | (labels >= num_classes)][0])
        raise ValueError(
            f"MedMNIST archive {path}: '{canonical}' label {bad} is outside the bundle's {num_classes} classes "
            f"(labels must be 0..{num_classes - 1}; set num_classes to match the data)."
        )

    indices = _stratified_indices(labels, fraction, seed)
    selected = images if len(indices) == len(images) else images[indices]
    selected = _scale_to_unit(_to_channel_first(selected, str(path)), str(path))
    return [
        {"image": image, "label": np.int64(labels[i]), "index": int(i)}
        for image, i in zip(selected, indices.tolist())
    ]
