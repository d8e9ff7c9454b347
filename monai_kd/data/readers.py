# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Reading the images and masks a datalist names into memory, with one-line errors naming the file.

One reader per format, all MONAI ``ImageReader`` classes picked by :func:`image_reader`:

- 2D photographs and scans: PNG, JPEG, TIFF, BMP, PPM/PGM/PNM (:class:`monai.data.PILReader`, grey or colour);
- NIfTI (2D or 3D): :class:`monai.data.NibabelReader`;
- NRRD, MetaImage (``.mha`` / ``.mhd``) and DICOM series folders: :class:`monai.data.ITKReader` (``itk``);
- single DICOM files: :class:`monai.data.PydicomReader`.

:func:`load_items` reads every item's ``image`` (and its ``label`` / ``fov`` when they are mask paths), brings the
image to the bundle's channel count (``channels``: 1 averages colour into grey, 3 repeats a grey image; an alpha
channel is dropped; or ``channel`` keeps one channel), optionally scales intensities to [0, 1] and resizes to the
bundle's size. A mask whose size differs from its image's is an error naming both files.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from monai.data import ITKReader, NibabelReader, PILReader, PydicomReader
from monai.config import KeysCollection
from monai.transforms import LoadImage, MapTransform, Resize, Zoom
from monai.utils import convert_to_numpy

__all__ = ["INTENSITY_MODES", "AsImaged", "ReadImaged", "image_reader", "load_items", "read_image"]

#: files read with PIL (2D, grey or colour); PIL also reads the Netpbm files (e.g. STARE) that ITK cannot open
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".ppm", ".pgm", ".pnm", ".pbm")
#: files read with MONAI's ITKReader (``itk``)
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm", ".dicom")
#: ``intensity`` values of :func:`load_items`
INTENSITY_MODES = (None, "unit", "zscore")


def image_reader(path: str | os.PathLike) -> type | None:
    """The MONAI ``ImageReader`` class for ``path``: by suffix, and ITK for a folder (a DICOM series).

    Args:
        path: an image file or a DICOM series folder.

    Returns:
        A reader class, or ``None`` to let :class:`monai.transforms.LoadImage` choose.
    """
    name = os.fspath(path).lower()
    if os.path.isdir(name) or name.endswith(ITK_SUFFIXES):
        return ITKReader
    if name.endswith(PIL_SUFFIXES):
        return PILReader
    if name.endswith(NIFTI_SUFFIXES):
        return NibabelReader
    if name.endswith(DICOM_SUFFIXES):
        return PydicomReader
    return None


@functools.lru_cache(maxsize=None)
def _loader(reader: type | None, native_dtype: bool, reverse_indexing: bool = True) -> LoadImage:
    """One ``LoadImage`` per reader and options (building one registers every MONAI reader: do it once)."""
    if reader is PILReader:  # (ITK's own flag means the opposite; its default gives numpy's order: kept)
        instance = reader(reverse_indexing=reverse_indexing)
    else:
        instance = reader() if reader else None
    return LoadImage(reader=instance, image_only=True, ensure_channel_first=True,
                     dtype=None if native_dtype else np.float32)


def read_image(path: str | os.PathLike, native_dtype: bool = False, reverse_indexing: bool = True) -> np.ndarray:
    """``path`` as a channel-first array, with a one-line error naming the file.

    Args:
        path: an image file or a DICOM series folder.
        native_dtype: keep the file's data type (e.g. ``uint8``) instead of ``float32``.
        reverse_indexing: 2D files read by PIL as (x, y) arrays, MONAI's default; ``False``: (row, column), as numpy
            and the MedMNIST arrays hold 2D images (and as the classification bundles' inference reads them).

    Raises:
        ValueError: the file cannot be read.
    """
    try:
        array = _loader(image_reader(path), native_dtype, reverse_indexing)(os.fspath(path))
    except Exception as exc:  # readers raise many types (ITK, nibabel, PIL, pydicom)
        reason = " ".join(str(exc).split())
        raise ValueError(f"Cannot read image {path}: {reason}") from exc
    return convert_to_numpy(array) if native_dtype else convert_to_numpy(array, dtype=np.float32)


def _spatial(array: np.ndarray, dims: int | None) -> np.ndarray:
    """Drop trailing singleton spatial dimensions (a 2D slice stored as ``(H, W, 1)``) down to ``dims``."""
    while dims is not None and array.ndim - 1 > dims and array.shape[-1] == 1:
        array = array[..., 0]
    return array


def _resize(array: np.ndarray, path: str, spatial_size: Sequence[int] | None, scale: float | None, mode: str) -> np.ndarray:
    """Resize a channel-first array to ``spatial_size`` or by the factor ``scale`` (neither: unchanged)."""
    if spatial_size is None and scale is None:
        return array
    dims = len(spatial_size) if spatial_size is not None else array.ndim - 1
    array = _spatial(array, dims)
    if array.ndim - 1 != dims:
        raise ValueError(
            f"Image {path} has spatial shape {array.shape[1:]}, expected {dims} dimensions "
            f"(spatial_size {tuple(spatial_size)})."
        )
    if spatial_size is None:  # MONAI's Zoom, as an inference config would use it (and Invertd can undo)
        return convert_to_numpy(Zoom(scale, mode=mode, keep_size=False)(array), dtype=np.float32)
    return convert_to_numpy(Resize(tuple(spatial_size), mode=mode)(array), dtype=np.float32)


def _unit_intensity(array: np.ndarray) -> np.ndarray:
    """8- and 16-bit unsigned images divided by 255 / 65535 (as MedMNIST's); others min-max scaled to [0, 1]."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    array = array.astype(np.float32)
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def _channels(image: np.ndarray, path: str, channels: int | None, channel: int | None) -> np.ndarray:
    """Bring a channel-first image to ``channels`` (1: average colour; 3: repeat grey) or keep ``channel``."""
    if channel is not None and image.shape[0] > 1:
        if channel >= image.shape[0]:
            raise ValueError(f"Image {path} has {image.shape[0]} channels; channel {channel} does not exist.")
        return image[channel : channel + 1]
    if channels is None or image.shape[0] == channels:
        return image
    if image.shape[0] in (2, 4):  # grey + alpha, RGB + alpha: the alpha channel is not image content
        image = image[:-1]
    if channels == 1:
        return image.mean(axis=0, keepdims=True, dtype=np.float32) if image.shape[0] > 1 else image
    if image.shape[0] == 1:
        return np.repeat(image, channels, axis=0)
    if image.shape[0] != channels:
        raise ValueError(f"Image {path} has {image.shape[0]} channels; the bundle expects {channels} (set in_channels).")
    return image


def _load_mask(
    path: str, image_path: str, image_shape: tuple[int, ...], spatial_size, scale, reverse_indexing: bool = True
) -> np.ndarray:
    """A label map ``(1, *spatial)`` of class indices (``uint8``); binary 0/255 masks become 0/1.

    Binary masks are resized by area and thresholded at one half; other label maps by nearest neighbour.

    Raises:
        ValueError: the mask's size differs from its image's (both files named).
    """
    mask = read_image(path, reverse_indexing=reverse_indexing)[:1]
    dims = len(spatial_size) if spatial_size is not None else None
    if _spatial(mask, dims or len(image_shape)).shape[1:] != tuple(image_shape):
        raise ValueError(
            f"Mask {path} has size {tuple(_spatial(mask, len(image_shape)).shape[1:])} but its image {image_path} has "
            f"size {tuple(image_shape)}: a mask must have its image's size."
        )
    values = np.unique(mask)
    if set(values.tolist()) <= {0.0, 255.0}:
        mask = mask / 255.0
    binary = set(np.unique(mask).tolist()) <= {0.0, 1.0}
    mask = _resize(mask, path, spatial_size, scale, "area" if binary else "nearest")
    return (mask >= 0.5).astype(np.uint8) if binary else np.rint(mask).astype(np.uint8)


def load_items(
    items: list[dict],
    spatial_size: Sequence[int] | None = None,
    channels: int | None = 1,
    scale: float | None = None,
    channel: int | None = None,
    intensity: str | None = None,
    reverse_indexing: bool = True,
) -> list[dict]:
    """Read every item's image (and label map or field of view, when they are paths) into memory.

    Args:
        items: items with an ``image`` path (file or DICOM series folder); ``label`` an integer class or a mask path,
            ``fov`` an optional field-of-view mask path.
        spatial_size: output spatial size (``Resize``, mode "area"); ``None`` keeps the size (or applies ``scale``).
        channels: channel count of the output images (1 averages colour channels, 3 repeats grey ones); ``None``
            keeps what the file holds.
        scale: resize by this factor instead of to ``spatial_size``.
        channel: keep this channel of multi-channel images (e.g. 1, green, for fundus photographs) instead.
        intensity: ``None`` keeps the stored values; ``"unit"`` maps them to [0, 1] (8/16-bit files divided by
            255 / 65535, as MedMNIST's arrays; other data min-max scaled per image); ``"zscore"``: zero mean and
            unit standard deviation per image.
        reverse_indexing: see :func:`read_image`.

    Returns:
        New items whose ``image`` (and ``label`` / ``fov`` map) is the array and ``path`` the original image path.

    Raises:
        ValueError: an image or mask cannot be read, a mask's size differs from its image's, an image has another
            number of spatial dimensions than ``spatial_size`` or channels that cannot become ``channels``.
    """
    if intensity not in INTENSITY_MODES:
        raise ValueError(f"intensity must be one of {INTENSITY_MODES}, got {intensity!r}.")
    out = []
    for item in items:
        path = os.fspath(item["image"])
        image = read_image(path, native_dtype=intensity == "unit", reverse_indexing=reverse_indexing)
        if intensity == "unit":
            image = _unit_intensity(image)
        elif intensity == "zscore":  # per image, as the BraTS volumes are stored
            image = (image - image.mean()) / max(float(image.std()), 1e-8)
        dims = len(spatial_size) if spatial_size is not None else None
        shape = tuple(_spatial(image, dims).shape[1:])
        image = _channels(image, path, channels, channel)
        loaded = {**item, "image": _resize(image, path, spatial_size, scale, "area"), "path": path}
        for key in ("label", "fov"):
            if isinstance(item.get(key), (str, os.PathLike)):
                loaded[key] = _load_mask(os.fspath(item[key]), path, shape, spatial_size, scale, reverse_indexing)
        out.append(loaded)
    return out


class AsImaged(MapTransform):
    """Give loaded images the bundle's form: ``spatial_dims`` spatial dimensions and ``channels`` channels.

    Trailing singleton spatial dimensions are dropped (a 2D NIfTI slice stored as ``(H, W, 1)``), then the channels
    are converted as :func:`load_items` converts them at training time (an alpha channel dropped; 1: colour averaged
    to grey; 3: grey repeated), so inference reads the files training read.

    Args:
        keys: keys of the images.
        channels: channel count the network takes.
        spatial_dims: spatial dimensions the network takes (``None``: leave them).
        allow_missing_keys: don't raise for missing keys.
    """

    def __init__(self, keys: KeysCollection, channels: int = 1, spatial_dims: int | None = 2,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.channels, self.spatial_dims = channels, spatial_dims

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            while self.spatial_dims is not None and image.ndim - 1 > self.spatial_dims and image.shape[-1] == 1:
                image = image[..., 0]
            if image.shape[0] in (2, 4) and image.shape[0] != self.channels:
                image = image[:-1]
            if image.shape[0] != self.channels:
                if self.channels == 1:
                    image = image.mean(0, keepdim=True) if hasattr(image, "dim") else image.mean(0, keepdims=True)
                elif image.shape[0] == 1:
                    image = image.repeat(self.channels, *[1] * (image.ndim - 1)) if hasattr(image, "dim") else np.repeat(image, self.channels, 0)
                else:
                    path = getattr(image, "meta", {}).get("filename_or_obj", key)
                    raise ValueError(f"Image {path} has {image.shape[0]} channels; the bundle expects {self.channels}.")
            d[key] = image
        return d


class ReadImaged(MapTransform):
    """Load image files with the reader :func:`image_reader` picks by suffix (as training reads them).

    MONAI's ``LoadImaged`` tries its readers in a fixed order and cannot open Netpbm files (PPM/PGM, e.g. STARE);
    this loads each path with the reader for its format and returns MONAI's ``MetaTensor`` (channel first, with the
    file's metadata, so savers and ``Invertd`` work as after ``LoadImaged``).

    Args:
        keys: keys of the image paths.
        reverse_indexing: see :func:`read_image` (``False``: 2D files as (row, column) arrays).
        allow_missing_keys: don't raise for missing keys.
    """

    def __init__(self, keys: KeysCollection, reverse_indexing: bool = True, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.reverse_indexing = reverse_indexing

    def __call__(self, data, reader: Any = None):
        """Load every key; ``reader`` (as ``LoadImaged(data, reader=...)`` takes it, e.g. the DICOM series reader
        ``monai-kd infer-dicom`` registers) replaces the reader picked by suffix."""
        if reader is not None:
            from monai.transforms import LoadImaged

            load = LoadImaged(self.keys, image_only=True, ensure_channel_first=True,
                              reverse_indexing=self.reverse_indexing, allow_missing_keys=self.allow_missing_keys)
            return load(data, reader=reader)
        d = dict(data)
        for key in self.key_iterator(d):
            path = os.fspath(d[key])
            try:
                d[key] = _loader(image_reader(path), False, self.reverse_indexing)(path)
            except Exception as exc:
                reason = " ".join(str(exc).split())
                raise ValueError(f"Cannot read image {path}: {reason}") from exc
        return d
