# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Acquisition-shift domains of 2D images in [0, 1] (e.g. PneumoniaMNIST) for cross-domain benchmarks.

Real chest X-ray sites differ by detector resolution and sharpness, exposure and display curve
(gamma), dynamic range (scatter, veiling glare) and quantum noise (dose). :class:`AcquisitionShift`
models one site as a fixed chain of MONAI transforms, applied in the physical order of acquisition:

1. lower resolution: :class:`monai.transforms.Resize` down ("area", anti-aliased) then back up
   ("bilinear") to the original size;
2. blur: :class:`monai.transforms.GaussianSmooth` between a reflecting
   :class:`monai.transforms.BorderPad` and a :class:`monai.transforms.CenterSpatialCrop` (no dark
   border from zero padding);
3. gamma: :class:`monai.transforms.AdjustContrast` (per image, keeps the image's min and max);
4. contrast: :class:`monai.transforms.ScaleIntensityRange` maps [0, 1] linearly onto a narrower
   ``window``;
5. noise: additive Gaussian noise drawn from :func:`numpy.random.default_rng` seeded by
   ``(seed, domain name, image index)``, so the view of an image is reproducible on its own;
6. clipping to [0, 1].

:data:`DOMAINS` defines the benchmark's domains:

============  ===============================================================================
domain        acquisition
============  ===============================================================================
source_a      soft, bright: gamma 0.7 (brighter mid-tones) + Gaussian blur sigma 0.7 px
source_b      dark, low dose: gamma 1.4 (darker mid-tones) + Gaussian noise std 0.06
target        low resolution 28 -> 14 -> 28 + low contrast (window [0.15, 0.85]) + noise std 0.03
============  ===============================================================================

:func:`shifted_medmnist_datalist` partitions every split of a MedMNIST archive into
``len(DOMAINS)`` disjoint, class-stratified parts with a seeded permutation
(:func:`domain_partition`), so an image never appears in two domains, and
applies each domain's shift to its part. ``source_a`` and ``source_b`` are the labelled source
domains; ``target`` is the held-out target domain (use ``labelled_fraction``/``role`` for a few
labels plus unlabelled images).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from monai.transforms import AdjustContrast, BorderPad, CenterSpatialCrop, GaussianSmooth, Resize, ScaleIntensityRange
from monai.utils import convert_to_numpy

from .medmnist import _stratified_indices, medmnist_datalist

__all__ = ["DOMAINS", "AcquisitionShift", "domain_partition", "shifted_medmnist_datalist"]

_ROLES = ("labelled", "unlabelled", "all")
UNLABELLED = -1  # label of the items of the unlabelled role


@dataclass(frozen=True)
class AcquisitionShift:
    """A deterministic acquisition shift of images in [0, 1], built from MONAI transforms.

    Calling it returns the shifted copy of channel-first images ``(C, H, W)`` (or a batch
    ``(N, C, H, W)`` with one index per image); the result depends only on the image, its index,
    the seed and the shift's parameters.

    Example::

        from monai_kd.data import DOMAINS

        shifted = DOMAINS["target"](image, index=12, seed=0)  # image: float32 (1, 28, 28) in [0, 1]

    Args:
        name: domain name; also seeds the noise, so two domains never share a noise pattern.
        description: one-line description of the acquisition.
        downsample: resolution factor in (0, 1]; e.g. 0.5 maps 28x28 to 14x14 and back.
        blur_sigma: standard deviation in pixels of the Gaussian blur, 0 for none.
        gamma: exponent of :class:`monai.transforms.AdjustContrast`; < 1 brightens, > 1 darkens.
        window: (low, high) in [0, 1] onto which [0, 1] is mapped linearly; (0, 1) keeps the contrast.
        noise_std: standard deviation of the additive Gaussian noise, 0 for none.

    Raises:
        ValueError: When a parameter is out of range.
    """

    name: str
    description: str = ""
    downsample: float = 1.0
    blur_sigma: float = 0.0
    gamma: float = 1.0
    window: tuple[float, float] = (0.0, 1.0)
    noise_std: float = 0.0

    def __post_init__(self) -> None:
        """Check the parameters.

        Raises:
            ValueError: When a parameter is out of range.
        """
        if not 0.0 < self.downsample <= 1.0:
            raise ValueError(f"AcquisitionShift {self.name!r}: downsample must be in (0, 1], got {self.downsample!r}.")
        if not self.blur_sigma >= 0.0:
            raise ValueError(f"AcquisitionShift {self.name!r}: blur_sigma must be >= 0, got {self.blur_sigma!r}.")
        if not self.gamma > 0.0:
            raise ValueError(f"AcquisitionShift {self.name!r}: gamma must be > 0, got {self.gamma!r}.")
        if len(self.window) != 2 or not 0.0 <= self.window[0] < self.window[1] <= 1.0:
            raise ValueError(
                f"AcquisitionShift {self.name!r}: window must be (low, high) with 0 <= low < high <= 1, got {self.window!r}."
            )
        if not self.noise_std >= 0.0:
            raise ValueError(f"AcquisitionShift {self.name!r}: noise_std must be >= 0, got {self.noise_std!r}.")

    def noise(self, shape: Sequence[int], index: int, seed: int = 0) -> np.ndarray:
        """The noise added to the image of ``index`` (before clipping).

        Args:
            shape: shape of one image, (C, H, W).
            index: index of the image in its split.
            seed: global seed.

        Returns:
            float32 array of ``shape``; zeros when ``noise_std`` is 0.
        """
        if self.noise_std == 0.0:
            return np.zeros(tuple(shape), np.float32)
        rng = np.random.default_rng([int(seed), zlib.crc32(self.name.encode()), int(index)])
        return rng.normal(0.0, self.noise_std, size=tuple(shape)).astype(np.float32)

    def __call__(self, images: np.ndarray, index: int | Sequence[int], seed: int = 0) -> np.ndarray:
        """Apply the shift.

        Args:
            images: float images in [0, 1], one ``(C, H, W)`` or a batch ``(N, C, H, W)``.
            index: index of the image in its split, or one index per image of a batch.
            seed: global seed of the noise.

        Returns:
            float32 array of the same shape, values in [0, 1].

        Raises:
            ValueError: When the array is not 3D/4D or a batch and its indices differ in length.
        """
        array = np.asarray(images, dtype=np.float32)
        single = array.ndim == 3
        batch = array[None] if single else array
        indices = [int(index)] if single and np.ndim(index) == 0 else [int(i) for i in np.atleast_1d(index)]
        if batch.ndim != 4 or len(indices) != len(batch):
            raise ValueError(
                f"AcquisitionShift {self.name!r}: expected (C, H, W) with one index or (N, C, H, W) with N "
                f"indices, got shape {array.shape} and {len(indices)} indices."
            )
        n, c, h, w = batch.shape
        if n == 0:
            return batch.copy()
        out = batch.reshape(n * c, h, w)  # channel-independent spatial transforms run on all images at once
        if self.downsample < 1.0:
            low = (max(1, round(h * self.downsample)), max(1, round(w * self.downsample)))
            out = Resize(low, mode="area")(out)
            out = Resize((h, w), mode="bilinear", align_corners=False)(out)
        if self.blur_sigma > 0.0:
            border = int(max(4.0 * self.blur_sigma, 0.5) + 0.5)  # the kernel radius of GaussianSmooth
            out = BorderPad(border, mode="reflect")(out)
            out = CenterSpatialCrop((h, w))(GaussianSmooth(self.blur_sigma)(out))
        out = convert_to_numpy(out, dtype=np.float32).reshape(n, c, h, w)
        if self.gamma != 1.0:
            adjust = AdjustContrast(self.gamma)
            out = np.stack([convert_to_numpy(adjust(image), dtype=np.float32) for image in out])
        if tuple(self.window) != (0.0, 1.0):
            scale = ScaleIntensityRange(a_min=0.0, a_max=1.0, b_min=self.window[0], b_max=self.window[1])
            out = convert_to_numpy(scale(out), dtype=np.float32)
        if self.noise_std > 0.0:
            out = out + np.stack([self.noise((c, h, w), i, seed) for i in indices])
        out = np.clip(out, 0.0, 1.0).astype(np.float32)
        return out[0] if single else out


#: The benchmark's acquisition domains, in partition order (see the module docstring).
DOMAINS: dict[str, AcquisitionShift] = {
    "source_a": AcquisitionShift(
        "source_a", "soft, bright: gamma 0.7 + Gaussian blur sigma 0.7 px", blur_sigma=0.7, gamma=0.7
    ),
    "source_b": AcquisitionShift(
        "source_b", "dark, low dose: gamma 1.4 + Gaussian noise std 0.06", gamma=1.4, noise_std=0.06
    ),
    "target": AcquisitionShift(
        "target",
        "low resolution 28->14->28 + low contrast (window [0.15, 0.85]) + Gaussian noise std 0.03",
        downsample=0.5,
        window=(0.15, 0.85),
        noise_std=0.03,
    ),
}


def domain_partition(labels: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Partition sample indices into one disjoint, class-stratified part per domain of :data:`DOMAINS`.

    Every class's indices are permuted with :func:`numpy.random.default_rng` (``seed``) and dealt
    round-robin to the domains; the domain receiving a class's first index rotates with the class's
    remainder, so part sizes differ by at most one per class and overall.

    Args:
        labels: one-dimensional class labels of a split.
        seed: seed of the permutation.

    Returns:
        Domain name -> sorted indices; the parts are disjoint and cover ``range(len(labels))``.
    """
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(int(seed))
    count = len(DOMAINS)
    parts: list[list[np.ndarray]] = [[] for _ in range(count)]
    start = 0
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        for k in range(count):
            parts[(start + k) % count].append(members[k::count])
        start = (start + len(members)) % count
    return {
        name: np.sort(np.concatenate(part)).astype(np.int64) if part else np.zeros(0, np.int64)
        for name, part in zip(DOMAINS, parts)
    }


def shifted_medmnist_datalist(
    dataset_dir: str | os.PathLike,
    split: str,
    domain: str,
    seed: int = 0,
    labelled_fraction: float = 1.0,
    role: str = "all",
    filename: str | None = None,
) -> list[dict]:
    """One domain's part of a MedMNIST split, with the domain's acquisition shift applied.

    The split is partitioned by :func:`domain_partition` (seeded, class-stratified, disjoint), so
    an image appears in exactly one domain. Each item is
    ``{"image", "label", "index", "domain"}``: ``image`` float32 (C, H, W) in [0, 1] with
    ``DOMAINS[domain]`` applied (``DOMAINS[domain](raw_image, index, seed)``), ``label`` a
    ``numpy.int64`` (-1 for unlabelled items), ``index`` the row in the archive's split,
    ``domain`` the domain name. Items are in archive order. For 3D archives (e.g. AdrenalMNIST3D,
    images ``(C, D, H, W)``) every axial slice of a volume gets the 2D shift, gamma and window act on the
    whole volume, and the noise is seeded per volume.

    ``labelled_fraction`` < 1 draws a seeded, class-stratified labelled subset of the domain's
    part (``max(1, round(labelled_fraction * count))`` images per class); ``role`` returns
    ``"labelled"`` that subset, ``"unlabelled"`` its complement with label -1 (empty when
    ``labelled_fraction`` is 1), or ``"all"`` both.

    Example::

        from monai_kd.data import shifted_medmnist_datalist

        src_a = shifted_medmnist_datalist("/data/pneumoniamnist", "train", "source_a")
        tgt_u = shifted_medmnist_datalist("/data/pneumoniamnist", "train", "target", labelled_fraction=0.05, role="unlabelled")
        tgt_test = shifted_medmnist_datalist("/data/pneumoniamnist", "test", "target")

    Args:
        dataset_dir: folder holding a MedMNIST ``.npz`` archive, or the path to the archive.
        split: ``"train"``, ``"val"`` (alias ``"validation"``) or ``"test"``.
        domain: a key of :data:`DOMAINS`.
        seed: seed of the domain partition, the labelled subset and the noise.
        labelled_fraction: fraction of labelled images per class, in (0, 1].
        role: ``"labelled"``, ``"unlabelled"`` or ``"all"``.
        filename: archive name inside ``dataset_dir`` when the folder holds several.

    Returns:
        A list of dictionaries, one per kept image.

    Raises:
        FileNotFoundError: When the archive does not exist.
        ValueError: When ``domain``, ``split``, ``role`` or ``labelled_fraction`` is invalid, or the
            archive is invalid (see :func:`monai_kd.data.medmnist_datalist`).
    """
    if not isinstance(domain, str) or domain not in DOMAINS:
        raise ValueError(
            f"Unknown domain {domain!r} for MedMNIST dataset {dataset_dir}: expected one of {list(DOMAINS)}."
        )
    valid_fraction = isinstance(labelled_fraction, (int, float, np.integer, np.floating)) and not isinstance(
        labelled_fraction, bool
    )
    if not valid_fraction or not 0.0 < float(labelled_fraction) <= 1.0:  # NaN fails too
        raise ValueError(
            f"labelled_fraction must be in (0, 1], got {labelled_fraction!r} for MedMNIST dataset {dataset_dir}."
        )
    if not isinstance(role, str) or role not in _ROLES:
        raise ValueError(f"Unknown role {role!r} for MedMNIST dataset {dataset_dir}: expected one of {list(_ROLES)}.")

    items = medmnist_datalist(dataset_dir, split, filename=filename)
    labels = np.array([item["label"] for item in items], dtype=np.int64)
    part = domain_partition(labels, seed)[domain]
    labelled = np.zeros(len(part), dtype=bool)
    labelled[_stratified_indices(labels[part], float(labelled_fraction), seed)] = True
    keep = np.ones(len(part), dtype=bool) if role == "all" else labelled == (role == "labelled")
    part, labelled = part[keep], labelled[keep]
    if len(part) == 0:
        return []

    raw = np.stack([items[i]["image"] for i in part.tolist()])
    if raw.ndim == 5:  # volumes (N, C, D, H, W): the 2D shift on every axial slice, noise seeded per volume
        shift = DOMAINS[domain]
        shifted = np.stack(
            [shift(v.reshape(1, -1, *v.shape[-2:]), [i], seed).reshape(v.shape) for v, i in zip(raw, part.tolist())]
        )
    else:
        shifted = DOMAINS[domain](raw, part.tolist(), seed)
    return [
        {
            "image": image,
            "label": np.int64(labels[i] if is_labelled else UNLABELLED),
            "index": int(i),
            "domain": domain,
        }
        for image, i, is_labelled in zip(shifted, part.tolist(), labelled.tolist())
    ]
