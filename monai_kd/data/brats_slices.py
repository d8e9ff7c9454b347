# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""2D axial slices (and 3D volume file lists) of a BraTS dataset for the cross-contrast benchmark.

The benchmark: slice-level "tumour present" classification, T1c as the labelled source domain and
FLAIR as the target domain (a small labelled fraction plus unlabelled slices). The dataset folder
follows the DeepMedic BraTS 2015 sample layout::

    dataset_dir/
        train/<subject>/{T1c_subtrMeanDivStd,Flair_subtrMeanDivStd,OTMultiClass,brainmask}.nii.gz
        validation/<subject>/...
        test/<subject>/...

Volumes are 240x240x155 (x, y, z), z-scored inside the brain, with labels 0-4 in
``OTMultiClass.nii.gz`` (any label > 0 is "whole tumour") and a brain mask. Splits come from the
folders, so a subject never appears in two splits.

For each subject :func:`brats_slice_datalist` keeps the axial slices whose brain covers at least
``min_brain_fraction`` of the slice, sets the background (outside the brain mask) to 0 with
:class:`monai.transforms.MaskIntensity` (the files store it as a per-volume constant equal to the
volume's minimum, which would otherwise identify the subject), crops every slice of the subject to
one square in-plane box around the brain (:class:`monai.transforms.SpatialCrop`; the same box for
T1c and FLAIR, so the contrasts stay aligned) and resizes it with :class:`monai.transforms.Resize`
("area" for images, "nearest-exact" for tumour masks). Processed slices are cached per
(file, modification time, size, preprocessing parameters), so loading a split again is instant.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
from monai.transforms import MaskIntensity, Resize, SpatialCrop
from monai.transforms.utils import generate_spatial_bounding_box
from monai.utils import convert_to_numpy

from .medmnist import _stratified_indices

__all__ = ["BRATS_CONTRASTS", "brats_slice_datalist", "brats_volume_datalist"]

#: contrast name -> image file name inside each subject folder
BRATS_CONTRASTS: dict[str, str] = {"t1c": "T1c_subtrMeanDivStd.nii.gz", "flair": "Flair_subtrMeanDivStd.nii.gz"}
LABEL_FILE = "OTMultiClass.nii.gz"
BRAINMASK_FILE = "brainmask.nii.gz"
_SPLIT_FOLDERS: dict[str, str] = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
_ROLES = ("labelled", "unlabelled", "all")
UNLABELLED = -1  # label of the items of the unlabelled role

_FileKey = tuple[str, int, int]  # (absolute path, modification time in ns, size in bytes)


class _Geometry(NamedTuple):
    """Per-subject slice selection shared by every contrast (cached, read-only arrays)."""

    shape: tuple[int, int, int]  # shape of the subject's volumes
    slices: np.ndarray  # (N,) int64 axial indices z of the kept slices
    roi_start: tuple[int, int]  # in-plane crop box, start (x, y)
    roi_end: tuple[int, int]  # in-plane crop box, end (x, y), exclusive
    brain: np.ndarray  # (N, x1 - x0, y1 - y0) bool brain mask of the kept slices inside the crop box
    tumour_pixels: np.ndarray  # (N,) int64 whole-tumour pixel count of each kept slice, full resolution
    masks: np.ndarray  # (N, 1, H, W) uint8 whole-tumour mask resized to spatial_size


# --------------------------------------------------------------------------- argument checks


def _check_split(split: str, where: Path) -> str:
    """Map ``split`` to its folder name.

    Args:
        split: ``"train"``, ``"val"`` (alias ``"validation"``) or ``"test"``.
        where: dataset folder, only used in the error message.

    Returns:
        The split's folder name, ``"train"``, ``"validation"`` or ``"test"``.

    Raises:
        ValueError: When ``split`` is not a known split name.
    """
    if not isinstance(split, str) or split not in _SPLIT_FOLDERS:
        raise ValueError(
            f"Unknown split {split!r} for BraTS dataset {where}: expected one of 'train', 'val' "
            f"(alias 'validation'), 'test'."
        )
    return _SPLIT_FOLDERS[split]


def _check_contrast(contrast: str, where: Path) -> str:
    """Return the image file name of ``contrast``.

    Args:
        contrast: ``"t1c"`` or ``"flair"``.
        where: dataset folder, only used in the error message.

    Returns:
        The file name of the contrast's volume inside a subject folder.

    Raises:
        ValueError: When ``contrast`` is not a known contrast.
    """
    if not isinstance(contrast, str) or contrast not in BRATS_CONTRASTS:
        raise ValueError(
            f"Unknown contrast {contrast!r} for BraTS dataset {where}: expected one of {sorted(BRATS_CONTRASTS)}."
        )
    return BRATS_CONTRASTS[contrast]


def _check_options(
    spatial_size: tuple[int, int],
    min_brain_fraction: float,
    tumour_min_pixels: int,
    labelled_fraction: float,
    role: str,
    where: Path,
) -> tuple[tuple[int, int], float, int, float]:
    """Validate the numeric options and the role of :func:`brats_slice_datalist`.

    Args:
        spatial_size: output (H, W) of every slice.
        min_brain_fraction: minimum fraction of brain pixels in a kept slice, in [0, 1].
        tumour_min_pixels: minimum number of tumour pixels of a "tumour present" slice, >= 1.
        labelled_fraction: fraction of labelled slices, in (0, 1].
        role: ``"labelled"``, ``"unlabelled"`` or ``"all"``.
        where: dataset folder, only used in the error messages.

    Returns:
        ``(spatial_size, min_brain_fraction, tumour_min_pixels, labelled_fraction)`` as plain Python types.

    Raises:
        ValueError: When any option is out of range or of the wrong type.
    """

    def is_int(v: object) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    def is_real(v: object) -> bool:
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

    size = tuple(spatial_size) if isinstance(spatial_size, (tuple, list)) else ()
    if len(size) != 2 or not all(is_int(s) and s > 0 for s in size):
        raise ValueError(
            f"spatial_size must be two positive integers (H, W), got {spatial_size!r} for BraTS dataset {where}."
        )
    if not is_real(min_brain_fraction) or not 0.0 <= float(min_brain_fraction) <= 1.0:
        raise ValueError(f"min_brain_fraction must be in [0, 1], got {min_brain_fraction!r} for BraTS dataset {where}.")
    if not is_int(tumour_min_pixels) or tumour_min_pixels < 1:
        raise ValueError(
            f"tumour_min_pixels must be an integer >= 1, got {tumour_min_pixels!r} for BraTS dataset {where}."
        )
    if not is_real(labelled_fraction) or not 0.0 < float(labelled_fraction) <= 1.0:  # NaN fails too
        raise ValueError(f"labelled_fraction must be in (0, 1], got {labelled_fraction!r} for BraTS dataset {where}.")
    if not isinstance(role, str) or role not in _ROLES:
        raise ValueError(f"Unknown role {role!r} for BraTS dataset {where}: expected one of {list(_ROLES)}.")
    return (int(size[0]), int(size[1])), float(min_brain_fraction), int(tumour_min_pixels), float(labelled_fraction)


# --------------------------------------------------------------------------- files


def _subject_folders(dataset_dir: str | os.PathLike, split: str, files: tuple[str, ...]) -> list[Path]:
    """List the subject folders of one split and check that they hold ``files``.

    Args:
        dataset_dir: BraTS dataset folder holding ``train/``, ``validation/`` and ``test/``.
        split: split folder name.
        files: file names every subject folder must hold.

    Returns:
        The subject folders, sorted by name.

    Raises:
        FileNotFoundError: When the dataset or split folder does not exist, the split folder has no
            subject folder, or a subject folder lacks one of ``files``.
    """
    root = Path(dataset_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"BraTS dataset folder does not exist: {root}")
    folder = root / split
    if not folder.is_dir():
        raise FileNotFoundError(
            f"BraTS split folder does not exist: {folder} (expected train/, validation/, test/ in {root})"
        )
    subjects = sorted(p for p in folder.iterdir() if p.is_dir())
    if not subjects:
        raise FileNotFoundError(f"No subject folder in BraTS split folder {folder}")
    for subject in subjects:
        for name in files:
            if not (subject / name).is_file():
                raise FileNotFoundError(f"BraTS subject folder {subject} has no file {name}")
    return subjects


def _file_key(path: Path) -> _FileKey:
    """Identify a file's current content for caching.

    Args:
        path: an existing file.

    Returns:
        ``(absolute path, modification time in ns, size in bytes)``.
    """
    resolved = path.resolve()
    stat = resolved.stat()
    return str(resolved), stat.st_mtime_ns, stat.st_size


def _read_volume(path: str) -> np.ndarray:
    """Read a 3D NIfTI volume with nibabel.

    Args:
        path: NIfTI file path.

    Returns:
        The voxel array (scaling applied), shape (X, Y, Z).

    Raises:
        ValueError: When the file cannot be read as NIfTI or is not a 3D volume.
    """
    try:
        image = nib.load(path)
        array = np.asanyarray(image.dataobj)
    except Exception as exc:  # nibabel raises many types (ImageFileError, EOFError, zlib errors, ...)
        reason = " ".join(str(exc).split())
        raise ValueError(f"Cannot read BraTS NIfTI file {path}: {reason}") from exc
    if array.ndim != 3:
        raise ValueError(f"BraTS NIfTI file {path} has shape {array.shape}, expected a 3D volume (X, Y, Z).")
    return array


def _square_box(brain_projection: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
    """Square in-plane box around the brain, inside the image.

    Args:
        brain_projection: (X, Y) bool, brain present in any kept slice.

    Returns:
        ``(start, end)`` of a square box (end exclusive) holding the brain's bounding box,
        centred on it and shifted to stay inside the image; the full slice when there is no brain.
    """
    dims = brain_projection.shape
    if not brain_projection.any():
        return (0, 0), (int(dims[0]), int(dims[1]))
    start, end = generate_spatial_bounding_box(brain_projection[None])
    side = min(max(e - s for s, e in zip(start, end)), *dims)
    box_start = []
    for s, e, dim in zip(start, end, dims):
        centre_start = (s + e - side) // 2
        box_start.append(int(min(max(centre_start, 0), dim - side)))
    return (box_start[0], box_start[1]), (box_start[0] + side, box_start[1] + side)


# --------------------------------------------------------------------------- cached processing


@functools.lru_cache(maxsize=16)
def _subject_geometry(
    brainmask: _FileKey, label: _FileKey, spatial_size: tuple[int, int], min_brain_fraction: float, crop_to_brain: bool
) -> _Geometry:
    """Select a subject's axial slices and compute its crop box and tumour masks (cached).

    Args:
        brainmask: cache key of the brain mask file.
        label: cache key of the ``OTMultiClass`` label file.
        spatial_size: output (H, W).
        min_brain_fraction: minimum fraction of brain pixels of a kept slice.
        crop_to_brain: crop to a square box around the brain, else keep the full slice.

    Returns:
        The subject's :class:`_Geometry` with read-only arrays.

    Raises:
        ValueError: When a file cannot be read, or the brain mask and label volumes differ in shape.
    """
    brain = _read_volume(brainmask[0]) > 0.5
    tumour = _read_volume(label[0]) > 0
    if brain.shape != tumour.shape:
        raise ValueError(
            f"BraTS label {label[0]} has shape {tumour.shape} but brain mask {brainmask[0]} has shape {brain.shape}."
        )
    slices = np.flatnonzero(brain.mean(axis=(0, 1)) >= min_brain_fraction).astype(np.int64)
    kept_brain = np.moveaxis(brain[:, :, slices], -1, 0)
    kept_tumour = np.moveaxis(tumour[:, :, slices], -1, 0)
    if crop_to_brain:
        start, end = _square_box(kept_brain.any(axis=0))
    else:
        start, end = (0, 0), (int(brain.shape[0]), int(brain.shape[1]))
    crop = SpatialCrop(roi_start=start, roi_end=end)
    kept_brain = convert_to_numpy(crop(kept_brain)).astype(bool)
    if len(slices):
        resized = Resize(spatial_size, mode="nearest-exact")(crop(kept_tumour.astype(np.float32)))
        masks = convert_to_numpy(resized)[:, None].astype(np.uint8)
    else:
        masks = np.zeros((0, 1, *spatial_size), np.uint8)
    geometry = _Geometry(
        shape=(int(brain.shape[0]), int(brain.shape[1]), int(brain.shape[2])),
        slices=slices,
        roi_start=start,
        roi_end=end,
        brain=np.ascontiguousarray(kept_brain),
        tumour_pixels=kept_tumour.sum(axis=(1, 2)).astype(np.int64),
        masks=masks,
    )
    for array in (geometry.slices, geometry.brain, geometry.tumour_pixels, geometry.masks):
        array.setflags(write=False)
    return geometry


@functools.lru_cache(maxsize=32)
def _subject_images(
    image: _FileKey,
    brainmask: _FileKey,
    label: _FileKey,
    spatial_size: tuple[int, int],
    min_brain_fraction: float,
    crop_to_brain: bool,
) -> np.ndarray:
    """Preprocess the kept slices of one subject's volume of one contrast (cached).

    Args:
        image: cache key of the contrast's volume.
        brainmask: cache key of the brain mask file.
        label: cache key of the label file.
        spatial_size: output (H, W).
        min_brain_fraction: minimum fraction of brain pixels of a kept slice.
        crop_to_brain: crop to a square box around the brain, else keep the full slice.

    Returns:
        Read-only float32 array (N, 1, H, W), background 0, in the order of the geometry's slices.

    Raises:
        ValueError: When a file cannot be read or the image and brain mask differ in shape.
    """
    geometry = _subject_geometry(brainmask, label, spatial_size, min_brain_fraction, crop_to_brain)
    volume = _read_volume(image[0])
    if tuple(volume.shape) != geometry.shape:
        raise ValueError(
            f"BraTS image {image[0]} has shape {volume.shape}, not the shape of brain mask {brainmask[0]}."
        )
    if len(geometry.slices) == 0:
        images = np.zeros((0, 1, *spatial_size), np.float32)
    else:
        stack = np.moveaxis(volume[:, :, geometry.slices], -1, 0).astype(np.float32)  # slices as channels
        stack = SpatialCrop(roi_start=geometry.roi_start, roi_end=geometry.roi_end)(stack)
        stack = MaskIntensity(mask_data=np.array(geometry.brain))(stack)  # background (outside the brain) -> 0
        images = convert_to_numpy(Resize(spatial_size, mode="area")(stack), dtype=np.float32)[:, None]
    images.setflags(write=False)
    return images


# --------------------------------------------------------------------------- public API


def brats_volume_datalist(dataset_dir: str | os.PathLike, split: str, contrast: str) -> list[dict]:
    """List one split of a BraTS dataset as 3D file paths for :class:`monai.transforms.LoadImaged`.

    Example::

        from monai.data import Dataset
        from monai.transforms import EnsureChannelFirstd, LoadImaged
        from monai_kd.data import brats_volume_datalist

        train = brats_volume_datalist("/data/brats2015-sample", "train", "flair")
        ds = Dataset(train, transform=[LoadImaged(keys=["image", "label", "brainmask"]),
                                       EnsureChannelFirstd(keys=["image", "label", "brainmask"])])

    Args:
        dataset_dir: BraTS dataset folder holding ``train/``, ``validation/`` and ``test/``.
        split: ``"train"``, ``"val"`` (alias ``"validation"``) or ``"test"``.
        contrast: ``"t1c"`` or ``"flair"``.

    Returns:
        One dictionary per subject (sorted by name): ``{"image", "label", "brainmask"}`` absolute file
        paths (label = ``OTMultiClass.nii.gz``, classes 0-4) and ``"subject"`` (the folder name).

    Raises:
        FileNotFoundError: When the dataset or split folder, or a subject's file, does not exist.
        ValueError: When ``split`` or ``contrast`` is unknown.
    """
    where = Path(dataset_dir).expanduser()
    folder = _check_split(split, where)
    image_file = _check_contrast(contrast, where)
    subjects = _subject_folders(where, folder, (image_file, LABEL_FILE, BRAINMASK_FILE))
    return [
        {
            "image": str((s / image_file).resolve()),
            "label": str((s / LABEL_FILE).resolve()),
            "brainmask": str((s / BRAINMASK_FILE).resolve()),
            "subject": s.name,
        }
        for s in subjects
    ]


def brats_slice_datalist(
    dataset_dir: str | os.PathLike,
    split: str,
    contrast: str,
    spatial_size: tuple[int, int] = (64, 64),
    min_brain_fraction: float = 0.05,
    tumour_min_pixels: int = 50,
    labelled_fraction: float = 1.0,
    seed: int = 0,
    role: str = "all",
    crop_to_brain: bool = True,
) -> list[dict]:
    """Axial slices of one split and contrast of a BraTS dataset, labelled "tumour present" or not.

    Each item is ``{"image", "label", "subject", "slice", "mask"}``: ``image`` float32 (1, H, W),
    z-scored intensities with the background (outside the brain mask) set to 0; ``label`` a
    ``numpy.int64``, 1 when the slice holds at least ``tumour_min_pixels`` whole-tumour pixels
    (``OTMultiClass > 0``, counted at full resolution), else 0; ``subject`` the subject folder name;
    ``slice`` the axial index z in the volume; ``mask`` the uint8 (1, H, W) whole-tumour mask (for
    segmentation). Slices with 1 to ``tumour_min_pixels - 1`` tumour pixels are labelled 0 but keep
    their tumour pixels in ``mask``. Items are ordered by subject, then slice.

    ``labelled_fraction`` < 1 splits the split's slices into a seeded, class-stratified labelled
    subset (``max(1, round(labelled_fraction * count))`` slices of every class) and its complement,
    the unlabelled slices. ``role`` chooses what is returned: ``"labelled"`` the subset,
    ``"unlabelled"`` the complement (label set to -1 and no ``mask``, so no supervision leaks;
    empty when ``labelled_fraction`` is 1), ``"all"`` both, in order. The draw depends only on the
    labels and the seed, so T1c and FLAIR get the same labelled slices. Because unlabelled items
    have no ``mask``, batch ``role="all"`` items with ``labelled_fraction < 1`` through separate
    labelled/unlabelled loaders (or drop ``mask``) rather than one collate.

    Example::

        from monai_kd.data import brats_slice_datalist

        source = brats_slice_datalist("/data/brats2015-sample", "train", "t1c")
        target_l = brats_slice_datalist("/data/brats2015-sample", "train", "flair", labelled_fraction=0.1, role="labelled")
        target_u = brats_slice_datalist("/data/brats2015-sample", "train", "flair", labelled_fraction=0.1, role="unlabelled")

    Args:
        dataset_dir: BraTS dataset folder holding ``train/``, ``validation/`` and ``test/``.
        split: ``"train"``, ``"val"`` (alias ``"validation"``) or ``"test"``.
        contrast: ``"t1c"`` or ``"flair"``.
        spatial_size: output (H, W) of every slice.
        min_brain_fraction: keep the axial slices whose brain mask covers at least this fraction of
            the full (240x240) slice, in [0, 1].
        tumour_min_pixels: minimum whole-tumour pixel count of a "tumour present" slice (at the
            original 1 mm resolution; 50 pixels = 0.5 cm2), >= 1.
        labelled_fraction: fraction of labelled slices per class, in (0, 1].
        seed: random seed of the labelled subset, ignored when ``labelled_fraction`` is 1.
        role: ``"labelled"``, ``"unlabelled"`` or ``"all"``.
        crop_to_brain: crop each subject's slices to one square box around its brain before
            resizing; False resizes the full slice.

    Returns:
        A list of dictionaries, one per kept slice; the arrays are fresh copies.

    Raises:
        FileNotFoundError: When the dataset or split folder, or a subject's file, does not exist.
        ValueError: When ``split``, ``contrast``, ``role`` or a numeric option is invalid, a file is
            not a readable 3D NIfTI volume, the volumes of a subject differ in shape, or no slice of
            the split passes ``min_brain_fraction``.
    """
    where = Path(dataset_dir).expanduser()
    folder = _check_split(split, where)
    image_file = _check_contrast(contrast, where)
    size, min_brain, min_tumour, fraction = _check_options(
        spatial_size, min_brain_fraction, tumour_min_pixels, labelled_fraction, role, where
    )
    crop = bool(crop_to_brain)

    per_subject = []
    for subject in _subject_folders(where, folder, (image_file, LABEL_FILE, BRAINMASK_FILE)):
        keys = (_file_key(subject / image_file), _file_key(subject / BRAINMASK_FILE), _file_key(subject / LABEL_FILE))
        geometry = _subject_geometry(keys[1], keys[2], size, min_brain, crop)
        per_subject.append((subject.name, geometry, _subject_images(*keys, size, min_brain, crop)))
    if sum(len(g.slices) for _, g, _ in per_subject) == 0:
        raise ValueError(
            f"No axial slice of BraTS split folder {where / folder} has a brain fraction >= {min_brain} "
            f"(min_brain_fraction)."
        )

    labels = np.concatenate([(g.tumour_pixels >= min_tumour).astype(np.int64) for _, g, _ in per_subject])
    labelled = np.zeros(len(labels), dtype=bool)
    labelled[_stratified_indices(labels, fraction, seed)] = True

    items: list[dict] = []
    position = 0
    for name, geometry, images in per_subject:
        for i, z in enumerate(geometry.slices.tolist()):
            is_labelled = bool(labelled[position])
            if role == "all" or (role == "labelled") == is_labelled:
                item = {
                    "image": images[i].copy(),
                    "label": np.int64(labels[position] if is_labelled else UNLABELLED),
                    "subject": name,
                    "slice": int(z),
                }
                if is_labelled:
                    item["mask"] = geometry.masks[i].copy()
                items.append(item)
            position += 1
    return items
