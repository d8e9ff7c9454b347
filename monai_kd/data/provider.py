# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""One way for every bundle to get its data: the user's datalist JSON when given, else the bundle's benchmark.

A bundle config builds one :class:`DatalistProvider` and asks it for the items of each role, so
``--datalist my.json`` works the same in every bundle::

    "datalist": null,
    "data": {
        "_target_": "monai_kd.data.DatalistProvider",
        "datalist": "@datalist",
        "benchmark": {"_target_": "monai_kd.data.MedMNISTBenchmark", "dataset_dir": "@dataset_dir"},
        "spatial_size": [28, 28], "channels": "@in_channels", "intensity": "unit"
    },
    "train_datalist": {"_target_": "monai_kd.data.role_items", "provider": "@data", "role": "train"},

The datalist JSON is Decathlon-style (paths relative to the file, :func:`monai_kd.data.datalist_split`)::

    {
        "training":   [{"image": "img/p01_a.png", "label": 1, "subject": "p01"}, ...],
        "validation": [...], "test": [...],      # optional: else drawn from "training" by subject
        "unlabelled": [{"image": ...}, ...],     # where a method uses unlabelled images
        "quiz":       [...]                      # MMKD's held-out quiz set (optional)
    }

``label`` is an integer class (classification) or a mask file (segmentation). Images are 2D (PNG, JPEG, TIFF,
PPM/PGM, 2D NIfTI, DICOM) or 3D (NIfTI, NRRD, MHA/MHD, DICOM series folders), read by
:mod:`monai_kd.data.readers`. A cross-domain datalist (``source`` / ``target_labelled`` / ``target_unlabelled``,
or any per-domain lists; :func:`monai_kd.data.domain_datalist.domain_datalist`) is recognised by its
``target_labelled`` list.

Roles: ``train``, ``val``, ``test``; ``unlabelled``; ``quiz``; the cross-domain roles ``source`` (or any list
name), ``target``, ``target_labelled``, ``target_unlabelled``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import numpy as np

from .brats_slices import brats_slice_datalist, brats_volume_datalist
from .datalist import datalist_split
from .domain_datalist import UNLABELLED, _labelled_items, domain_datalist
from .domain_shift import shifted_medmnist_datalist
from .medmnist import medmnist_class_names, medmnist_datalist
from .readers import load_items

__all__ = [
    "BratsSliceBenchmark",
    "BratsVolumeBenchmark",
    "DatalistProvider",
    "MedMNISTBenchmark",
    "ShiftedMedMNISTBenchmark",
    "role_items",
]

_SPLITS = {"train": "train", "training": "train", "val": "val", "validation": "val", "test": "test"}
#: cross-domain roles a benchmark of a cross-domain bundle answers
_TARGET_ROLES = {"target": None, "target_labelled": "labelled", "target_unlabelled": "unlabelled"}


class DatalistProvider:
    """The items of each role: read from ``datalist`` (a JSON file) when it is set, else from ``benchmark``.

    Args:
        datalist: path of a datalist JSON (see the module docstring), or ``None`` for the bundle's benchmark.
        benchmark: callable ``role -> items`` giving the bundle's own data (e.g. :class:`MedMNISTBenchmark`).
        spatial_size: size the datalist's images (and masks) are resized to; ``None`` keeps their size.
        channels: channel count of the datalist's images (1: colour averaged to grey; 3: grey repeated); ``None``
            keeps what the files hold.
        channel: keep this channel of colour images instead (e.g. 1, green, for fundus photographs).
        scale: resize the datalist's images by this factor (with ``spatial_size`` ``None``).
        intensity: ``"unit"`` maps the datalist's intensities to [0, 1] (as MedMNIST's arrays); ``None`` keeps them.
        seed: seed of the by-subject partition of ``training`` into splits that the JSON does not list.
        ratios: (train, val, test) proportions of subjects of that partition.
        num_classes: when given, integer class labels must lie in ``[0, num_classes)``.
        reverse_indexing: 2D files (PIL) as (x, y) arrays, MONAI's ``LoadImage`` default; ``False`` (default): as
            (row, column), like the MedMNIST arrays and the classification bundles' inference. Use the orientation the
            bundle's inference reads.
        load: read the datalist's images into memory; ``False`` gives items with absolute paths (for configs that
            read files with ``LoadImaged``, e.g. 3D volumes).

    Raises:
        ValueError: (on a call) unknown role, no datalist and no benchmark, a bad label or an unreadable image.
    """

    def __init__(
        self,
        datalist: str | os.PathLike | None = None,
        benchmark: Callable[[str], list[dict]] | None = None,
        spatial_size: Sequence[int] | None = None,
        channels: int | None = 1,
        channel: int | None = None,
        scale: float | None = None,
        intensity: str | None = None,
        seed: int = 0,
        ratios: Sequence[float] = (0.8, 0.1, 0.1),
        num_classes: int | None = None,
        load: bool = True,
        reverse_indexing: bool = False,
    ) -> None:
        self.load = load
        self.reverse_indexing = reverse_indexing
        self.datalist = os.fspath(datalist) if datalist else None
        self.benchmark = benchmark
        self.spatial_size = None if spatial_size is None else tuple(int(s) for s in spatial_size)
        self.channels = channels
        self.channel = channel
        self.scale = scale
        self.intensity = intensity
        self.seed = seed
        self.ratios = tuple(ratios)
        self.num_classes = num_classes

    def __call__(self, role: str) -> list[dict]:
        """The items of ``role`` (see the module docstring for the roles)."""
        if self.datalist is None:
            if self.benchmark is None:
                raise ValueError(f"no datalist given for role {role!r}: set --datalist my.json.")
            return self.benchmark(role)
        if not os.path.isfile(self.datalist):
            raise FileNotFoundError(f"Datalist file does not exist: {self.datalist}")
        with open(self.datalist, encoding="utf-8") as f:
            try:
                keys = set(json.load(f))
            except (json.JSONDecodeError, TypeError) as exc:
                raise ValueError(f"Invalid JSON in datalist file {self.datalist}: {exc}") from exc
        if "target_labelled" in keys:  # a cross-domain datalist
            return self._checked(domain_datalist(
                self.datalist, role, self.spatial_size, ratios=self.ratios, seed=self.seed,
                load=self.load, grey=self.channels == 1, scale=self.scale, channel=self.channel,
                channels=self.channels, intensity=self.intensity,
            ))
        items = self._items(role, keys)
        if not self.load:
            return self._checked(items)
        return self._checked(load_items(items, self.spatial_size, self.channels, self.scale, self.channel,
                                        self.intensity, self.reverse_indexing))

    @property
    def class_names(self) -> list[str] | None:
        """Names of the classes of the data used, in label order (``None``: not known).

        From the datalist's ``classes`` list (as ``monai-kd datalist --labels folder`` writes it) or Decathlon
        ``labels`` mapping (``{"0": "benign", ...}``); without a datalist, from the benchmark's ``class_names``.
        """
        if self.datalist is None:
            names = getattr(self.benchmark, "class_names", None)
            return None if names is None else list(names)
        with open(self.datalist, encoding="utf-8") as f:
            content = json.load(f)
        if isinstance(content.get("classes"), list):
            return [str(name) for name in content["classes"]]
        labels = content.get("labels")
        if isinstance(labels, dict) and all(str(k).isdigit() for k in labels):
            return [str(labels[k]) for k in sorted(labels, key=int)]
        return None

    def _items(self, role: str, keys: set[str]) -> list[dict]:
        """The (not yet loaded) items of ``role`` in a Decathlon-style datalist."""
        path = self.datalist
        if role in _SPLITS:
            split = _SPLITS[role]
            return _labelled_items(datalist_split(path, split, ratios=self.ratios, seed=self.seed), path, split)
        everything = (1.0, 0.0, 0.0)
        if role == "unlabelled":
            items = datalist_split(path, "train", ratios=everything, seed=self.seed, key="unlabelled")
            return [{k: v for k, v in i.items() if k != "label"} | {"label": np.int64(UNLABELLED)} for i in items]
        if role in keys:  # quiz, or a per-domain list
            items = datalist_split(path, "train", ratios=everything, seed=self.seed, key=role)
            return _labelled_items(items, path, role)
        raise ValueError(
            f"Datalist file {path} has no {role!r} list; this bundle needs it (keys present: {sorted(keys)})."
        )

    def _checked(self, items: list[dict]) -> list[dict]:
        """Refuse an integer class label outside ``[0, num_classes)``, naming the image."""
        if self.num_classes is not None:
            for item in items:
                label = item.get("label")
                if isinstance(label, (int, np.integer)) and label != UNLABELLED and not 0 <= label < self.num_classes:
                    raise ValueError(
                        f"Datalist file {self.datalist}: image {item.get('path', item.get('image'))} has label "
                        f"{int(label)}, outside the bundle's {self.num_classes} classes (set --num_classes)."
                    )
        return items


def role_items(provider: Callable[[str], list[dict]], role: str) -> list[dict]:
    """``provider(role)``: lets a bundle config name a role's datalist as a component instead of an expression."""
    return provider(role)


class MedMNISTBenchmark:
    """Roles ``train`` / ``val`` / ``test`` of a MedMNIST ``.npz`` archive (:func:`monai_kd.data.medmnist_datalist`)."""

    def __init__(self, dataset_dir: str | os.PathLike, dataset_file: str | None = None, num_classes: int | None = None):
        self.dataset_dir, self.dataset_file, self.num_classes = dataset_dir, dataset_file, num_classes

    def __call__(self, role: str) -> list[dict]:
        return medmnist_datalist(self.dataset_dir, role, self.dataset_file, num_classes=self.num_classes)

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """The archive's class names (:func:`monai_kd.data.medmnist_class_names`; ``None``: not known)."""
        return medmnist_class_names(self.dataset_dir, self.dataset_file)


class BratsSliceBenchmark:
    """2D axial BraTS slices (:func:`monai_kd.data.brats_slice_datalist`) by role.

    Roles ``train`` / ``val`` / ``test`` give ``contrast``'s slices of the split; the cross-domain roles give the
    target contrast's training slices (``target``, ``target_labelled``, ``target_unlabelled``: a seeded
    ``labelled_fraction``), and ``source`` (or a contrast name) a source contrast's training slices.

    Args:
        dataset_dir: the BraTS folder.
        contrast: the (target) contrast, e.g. ``"flair"``.
        spatial_size: slice size.
        source_contrast: the contrast of role ``source``.
        labelled_fraction: fraction of target training slices with labels (by patient).
        seed: seed of that draw.
        mask_label: the whole-tumour mask as ``label`` (segmentation) instead of the "tumour present" class.
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike,
        contrast: str,
        spatial_size: Sequence[int] = (64, 64),
        source_contrast: str | None = None,
        labelled_fraction: float = 1.0,
        seed: int = 0,
        mask_label: bool = False,
    ) -> None:
        self.dataset_dir, self.contrast, self.spatial_size = dataset_dir, contrast, spatial_size
        self.source_contrast, self.labelled_fraction, self.seed = source_contrast, labelled_fraction, seed
        self.mask_label = mask_label

    def __call__(self, role: str) -> list[dict]:
        d, size = self.dataset_dir, self.spatial_size
        if role in _SPLITS:
            items = brats_slice_datalist(d, _SPLITS[role], self.contrast, size)
        elif role in _TARGET_ROLES:
            kw = {} if _TARGET_ROLES[role] is None else {"role": _TARGET_ROLES[role]}
            items = brats_slice_datalist(d, "train", self.contrast, size, labelled_fraction=self.labelled_fraction,
                                         seed=self.seed, **kw)
        else:  # "source" or a contrast name
            contrast = self.source_contrast if role == "source" else role
            items = brats_slice_datalist(d, "train", contrast, size)
        if self.mask_label:
            return [{"image": i["image"], "label": i["mask"], "subject": i["subject"], "slice": i["slice"]} for i in items]
        return items


class BratsVolumeBenchmark:
    """BraTS volumes of one contrast by split (:func:`monai_kd.data.brats_volume_datalist`), paths for LoadImaged."""

    def __init__(self, dataset_dir: str | os.PathLike, contrast: str) -> None:
        self.dataset_dir, self.contrast = dataset_dir, contrast

    def __call__(self, role: str) -> list[dict]:
        return brats_volume_datalist(self.dataset_dir, _SPLITS.get(role, role), self.contrast)


class ShiftedMedMNISTBenchmark:
    """MedMNIST under acquisition shifts (:func:`monai_kd.data.shifted_medmnist_datalist`) by cross-domain role.

    A source domain's name (e.g. ``source_a``) gives its training images; ``target``, ``target_labelled`` and
    ``target_unlabelled`` the target domain's (a seeded ``labelled_fraction`` labelled); ``val`` / ``test`` the
    target domain's validation and test images.
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike,
        target_domain: str,
        labelled_fraction: float = 1.0,
        seed: int = 0,
        dataset_file: str | None = None,
    ) -> None:
        self.dataset_dir, self.target_domain, self.labelled_fraction = dataset_dir, target_domain, labelled_fraction
        self.seed, self.dataset_file = seed, dataset_file

    def __call__(self, role: str) -> list[dict]:
        d, seed, file = self.dataset_dir, self.seed, self.dataset_file
        if role in ("val", "validation", "test"):
            return shifted_medmnist_datalist(d, _SPLITS[role], self.target_domain, seed=seed, filename=file)
        if role in _TARGET_ROLES:
            kw = {} if _TARGET_ROLES[role] is None else {"role": _TARGET_ROLES[role]}
            return shifted_medmnist_datalist(d, "train", self.target_domain, seed=seed,
                                             labelled_fraction=self.labelled_fraction, filename=file, **kw)
        return shifted_medmnist_datalist(d, "train", role, seed=seed, filename=file)

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """The archive's class names (:func:`monai_kd.data.medmnist_class_names`; ``None``: not known)."""
        return medmnist_class_names(self.dataset_dir, self.dataset_file)
