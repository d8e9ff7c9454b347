# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""A dataset of 2D slices that also takes 3D image/label *files*, for 2D bundles trained from volume datastores.

A 2D segmentation bundle (e.g. ``kdml_seg``) trains on in-memory axial slices (:func:`brats_slice_datalist`).
Annotation tools hand over something else: MONAI Label's bundle training task sets ``train#dataset#data`` and
``validate#dataset#data`` to ``[{"image": "<volume>.nii.gz", "label": "<label map>.nii.gz"}, ...]`` from its
datastore. :class:`VolumeSliceDataset` accepts both: items whose image is already an array pass through, and
items whose image is a file path (NIfTI, or anything MONAI's ``LoadImage`` reads) are expanded into 2D slice items
prepared like the bundle's own slices and like its ``inference.json`` sees volumes:

1. image and label are loaded with :class:`monai.transforms.LoadImage` and reoriented to ``axcodes``;
2. the background (voxels equal to the volume's minimum, as ``x * (x > x.min())`` of the inference
   preprocessing) is set to 0 and the rest z-scored (:class:`monai.transforms.NormalizeIntensity`, ``nonzero``);
3. every kept axial slice is cropped to one square in-plane box around the foreground of the whole volume and
   resized to ``spatial_size`` ("area" for the image, "nearest-exact" for the label);
4. slices whose foreground covers less than ``min_foreground_fraction`` of the crop box are dropped;
5. labels > 0 become 1 when ``binarize_label`` (whole tumour), else they are kept.

Expansion happens once, when the dataset is built; the bundle's ``transform`` (augmentation) then runs per item as
usual.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.data import Dataset
from monai.transforms import LoadImage, NormalizeIntensity, Orientation, Resize, SpatialCrop

from .brats_slices import _square_box

__all__ = ["VolumeSliceDataset", "volume_slices"]


def _is_path(value: object) -> bool:
    return isinstance(value, (str, os.PathLike))


def volume_slices(
    image_file: str | os.PathLike,
    label_file: str | os.PathLike | None,
    spatial_size: Sequence[int] = (64, 64),
    axcodes: str = "LPS",
    min_foreground_fraction: float = 0.1,
    binarize_label: bool = True,
    image_key: str = "image",
    label_key: str = "label",
) -> list[dict]:
    """The axial slices of one volume (and its label map) as in-memory 2D items (steps 1-5 of the module).

    Args:
        image_file: the image volume.
        label_file: its label map on the same grid, or ``None`` (items without label).
        spatial_size: in-plane size of every slice.
        axcodes: orientation the volume is brought to first; slices are taken along its last axis.
        min_foreground_fraction: minimum fraction of foreground pixels in the crop box for a slice to be kept.
        binarize_label: map labels > 0 to 1.
        image_key: key of the image in the items.
        label_key: key of the label in the items.

    Returns:
        One item per kept slice: ``{image_key: (1, H, W) float32, label_key: (1, H, W) uint8, "source": file,
        "slice": index}``.

    Raises:
        ValueError: When the image is not a 3D volume or the label map's shape differs from the image's.
    """
    loader = LoadImage(image_only=True, ensure_channel_first=True)
    orient = Orientation(axcodes=axcodes, labels=(("L", "R"), ("P", "A"), ("I", "S")))
    image = orient(loader(image_file))
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"'{image_file}' loads as shape {tuple(image.shape)}; expected a one-channel 3D volume.")
    label = None
    if label_file is not None:
        label = orient(loader(label_file))
        if tuple(label.shape[1:]) != tuple(image.shape[1:]):
            raise ValueError(
                f"label map '{label_file}' has shape {tuple(label.shape[1:])}, image '{image_file}' "
                f"{tuple(image.shape[1:])}: they must be on the same grid."
            )
    volume = torch.as_tensor(image.as_tensor() if hasattr(image, "as_tensor") else image, dtype=torch.float32)
    volume = volume * (volume > volume.min())
    volume = NormalizeIntensity(nonzero=True)(volume)
    foreground = (volume[0] != 0).numpy()
    start, end = _square_box(foreground.any(axis=-1))
    crop = SpatialCrop(roi_start=start, roi_end=end)
    box_pixels = (end[0] - start[0]) * (end[1] - start[1])
    resize_image = Resize(spatial_size, mode="area")
    resize_label = Resize(spatial_size, mode="nearest-exact")
    items = []
    for z in range(volume.shape[-1]):
        plane = crop(volume[..., z])
        if float((plane != 0).sum()) < min_foreground_fraction * box_pixels:
            continue
        item = {image_key: np.asarray(resize_image(plane), dtype=np.float32), "source": str(image_file), "slice": z}
        if label is not None:
            mask = crop(torch.as_tensor(np.asarray(label[..., z]), dtype=torch.float32))
            mask = (mask > 0).float() if binarize_label else mask
            item[label_key] = np.asarray(resize_label(mask), dtype=np.uint8)
        items.append(item)
    return items


class VolumeSliceDataset(Dataset):
    """A :class:`monai.data.Dataset` of 2D slices whose items may also be 3D image/label files (see the module).

    Args:
        data: items: ``{"image": array, "label": array, ...}`` used as they are, or ``{"image": path, "label":
            path}`` expanded into the volume's slices (``label`` may be absent).
        transform: the bundle's per-item transform (augmentation), applied to every slice item.
        spatial_size: in-plane size of slices expanded from files.
        axcodes: orientation of volumes before slicing along their last axis.
        min_foreground_fraction: slices with less foreground in the crop box are dropped.
        binarize_label: map label values > 0 to 1.
        image_key: key of the image.
        label_key: key of the label.

    Raises:
        ValueError: When a file item yields no slice (e.g. an empty image) or its files do not fit together.
    """

    def __init__(
        self,
        data: Sequence[dict],
        transform: Callable | None = None,
        spatial_size: Sequence[int] = (64, 64),
        axcodes: str = "LPS",
        min_foreground_fraction: float = 0.1,
        binarize_label: bool = True,
        image_key: str = "image",
        label_key: str = "label",
    ) -> None:
        items: list[dict] = []
        for item in data:
            if not _is_path(item.get(image_key)):
                items.append(item)
                continue
            slices = volume_slices(
                item[image_key],
                item.get(label_key),
                spatial_size,
                axcodes,
                min_foreground_fraction,
                binarize_label,
                image_key,
                label_key,
            )
            if not slices:
                raise ValueError(
                    f"'{item[image_key]}' has no slice with at least {min_foreground_fraction:.0%} foreground."
                )
            items.extend(slices)
        super().__init__(items, transform)
