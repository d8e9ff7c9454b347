# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Cross-domain datalists (labelled source, labelled target, unlabelled target) from one JSON file.

The JSON lists image files (NIfTI, PNG, or DICOM files / series folders) by role; relative paths are
resolved against ``base_dir`` (by default the JSON file's folder)::

    {
        "source":            [{"image": "t1c/case01_z080.nii.gz", "label": 1}, ...],
        "target_labelled":   [{"image": "flair/case07_z064.nii.gz", "label": 0}, ...],
        "target_unlabelled": [{"image": "flair/case08_z070.nii.gz"}, ...],
        "validation":        [{"image": "flair/case09_z050.nii.gz", "label": 1}, ...],  # optional
        "test":              [{"image": "flair/case10_z090.nii.gz", "label": 0}, ...]   # optional
    }

``source`` may be replaced or joined by other named source lists (e.g. ``source_a``, ``source_b``) for
teachers trained on different source domains. ``validation`` and ``test`` hold labelled target-domain
images; when absent they are drawn from ``target_labelled`` by a seeded partition
(:func:`monai_kd.data.datalist_split`). Labels are integer class indices (classification) or label-map files
(segmentation: a mask file per image, class indices per pixel; 8-bit binary masks with values {0, 255} read as
{0, 1}); an item may name a field-of-view mask under ``fov`` (resolved like the other paths, loaded like a binary
mask). Items name their person in a ``subject`` (or ``patient``) field: partitions
are drawn by subject, and a validation or test subject found in any training role (a source list, the labelled
or the unlabelled target pool) is an error. :mod:`monai_kd.data.retinal` writes the retinal vessel benchmark in
this layout.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .datalist import _subject, datalist_split
from .readers import load_items

__all__ = ["TARGET_ROLES", "domain_datalist"]

#: roles that read target-domain lists; any other role names a source list of the JSON
TARGET_ROLES = ("target_labelled", "target_unlabelled", "target", "val", "test")
UNLABELLED = -1  # label of unlabelled items


def _labelled_items(items: list[dict], path: str, key: str) -> list[dict]:
    """Check that every item carries an integer class label or a label-map path; integers become ``numpy.int64``.

    Args:
        items: datalist items.
        path: datalist path, only used in the error message.
        key: JSON list the items come from, only used in the error message.

    Returns:
        New item dictionaries with ``label`` as ``numpy.int64``.

    Raises:
        ValueError: When an item has no label or a label that is neither an integer >= 0 nor a path.
    """
    out = []
    for i, item in enumerate(items):
        label = item.get("label")
        if isinstance(label, (str, os.PathLike)):  # a label map (segmentation); datalist_split checked it exists
            out.append(dict(item))
            continue
        valid = isinstance(label, (int, np.integer)) and not isinstance(label, bool) and label >= 0
        if not valid:
            raise ValueError(
                f"Datalist file {path}: item {i} of {key!r} needs an integer class 'label' >= 0 or a label-map path, "
                f"got {label!r}."
            )
        out.append({**item, "label": np.int64(label)})
    return out


def _load_images(
    items: list[dict],
    spatial_size: Sequence[int] | None,
    grey: bool,
    scale: float | None = None,
    channel: int | None = None,
    channels: int | None = None,
    intensity: str | None = None,
) -> list[dict]:
    """Read every item's image (and label map or field of view) into memory (:func:`monai_kd.data.readers.load_items`).

    ``grey`` averages several channels into one unless ``channels`` asks for another count.
    """
    if channels is None and grey:
        channels = 1
    return load_items(items, spatial_size, channels, scale, channel, intensity)


def domain_datalist(
    datalist_file: str | os.PathLike,
    role: str,
    spatial_size: Sequence[int] | None = None,
    base_dir: str | os.PathLike | None = None,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    load: bool = True,
    grey: bool = True,
    scale: float | None = None,
    channel: int | None = None,
    channels: int | None = None,
    intensity: str | None = None,
) -> list[dict]:
    """Items of one role of a cross-domain datalist JSON (see the module docstring for the format).

    Roles:

    - ``"target_labelled"``, ``"val"``, ``"test"``: the train / validation / test part of the labelled target
      images (explicit ``validation`` / ``test`` lists, else a seeded ``ratios`` partition of ``target_labelled``);
    - ``"target_unlabelled"``: every ``target_unlabelled`` image, label -1;
    - ``"target"``: the labelled target training images and the unlabelled ones, all with label -1 (the
      unlabelled target-domain data of domain-adversarial teachers);
    - any other name: that source list of the JSON (e.g. ``"source"``), all its items, labelled.

    With ``load`` (default) every image is read with :class:`monai.transforms.LoadImage` (channel first, several
    channels averaged into one with ``grey``) and resized to ``spatial_size`` with
    :class:`monai.transforms.Resize` ("area"), so the items can go through the same in-memory transforms as
    :func:`monai_kd.data.brats_slice_datalist` items. Keep the lists moderate: every image is held in memory.

    Example::

        from monai_kd.data import domain_datalist

        source = domain_datalist("my_domains.json", "source", spatial_size=(64, 64))
        target_u = domain_datalist("my_domains.json", "target_unlabelled", spatial_size=(64, 64))

    Args:
        datalist_file: path of the JSON file.
        role: one of :data:`TARGET_ROLES` or the name of a source list.
        spatial_size: spatial size of the loaded images; ``None`` keeps each image's size.
        base_dir: folder that relative paths are resolved against; default the JSON file's folder.
        ratios: (train, val, test) proportions used when ``validation`` / ``test`` are not listed explicitly.
        seed: seed of that partition.
        load: read the images into memory; ``False`` returns the items with absolute paths.
        grey: average multi-channel images (e.g. RGB PNG) into one channel.
        scale: with ``spatial_size`` ``None``, resize every image (and label map) by this factor instead.
        channel: keep this channel of multi-channel images (e.g. 1, the green channel of fundus photographs).
        channels: channel count of the loaded images (e.g. 3 for colour); default 1 with ``grey``, else as stored.
        intensity: ``"unit"`` maps intensities to [0, 1] (see :func:`monai_kd.data.readers.load_items`).

    Returns:
        A list of dictionaries with ``image`` (array, or path when ``load`` is False), ``label``
        (``numpy.int64`` class, -1 for unlabelled items, which carry no label map; or the label map) and the JSON's other fields (``path`` = the image path).

    Raises:
        FileNotFoundError: When the JSON file or an image it lists does not exist.
        ValueError: When the JSON is invalid, the needed list is missing or empty (e.g. an empty
            ``target_labelled`` or ``target_unlabelled`` list), a labelled item has no integer label, or an
            image cannot be read.
    """
    if not isinstance(role, str) or not role:
        raise ValueError(f"role must be a non-empty string, got {role!r} for datalist {datalist_file}.")
    path = os.fspath(datalist_file)
    everything = (1.0, 0.0, 0.0)
    if role in ("target_labelled", "val", "test"):
        split = {"target_labelled": "train", "val": "val", "test": "test"}[role]
        items = _labelled_items(
            datalist_split(path, split, base_dir, ratios, seed, key="target_labelled"), path, f"target_labelled/{split}"
        )
    elif role == "target_unlabelled":
        items = [
            {**i, "label": np.int64(UNLABELLED)}
            for i in datalist_split(path, "train", base_dir, everything, seed, key=role)
        ]
    elif role == "target":
        labelled = datalist_split(path, "train", base_dir, ratios, seed, key="target_labelled")
        unlabelled = datalist_split(path, "train", base_dir, everything, seed, key="target_unlabelled")
        items = [{**i, "label": np.int64(UNLABELLED)} for i in labelled + unlabelled]
    else:
        items = _labelled_items(datalist_split(path, "train", base_dir, everything, seed, key=role), path, role)
    if role not in ("val", "test"):
        _check_held_out_subjects(items, path, role, base_dir, ratios, seed)
    root = os.fspath(base_dir) if base_dir is not None else os.path.dirname(os.path.abspath(path))
    items = [{**i, "fov": os.path.join(root, i["fov"])} if isinstance(i.get("fov"), str) else i for i in items]
    return _load_images(items, spatial_size, grey, scale, channel, channels, intensity) if load else items


def _check_held_out_subjects(
    items: list[dict], path: str, role: str, base_dir: str | os.PathLike | None, ratios: Sequence[float], seed: int
) -> None:
    """Raise when a training role holds an image of a validation or test subject (a second door to held-out people).

    Subjects are the items' ``subject`` (or ``patient``) fields; items without one are not checked.
    """
    held_out: dict[str, str] = {}
    for split in ("val", "test"):
        try:
            for item in datalist_split(path, split, base_dir, ratios, seed, key="target_labelled"):
                if _subject(item, "subject") is not None:
                    held_out[_subject(item, "subject")] = split
        except ValueError as exc:
            if "is empty" not in str(exc):  # an empty held-out split holds no subject
                raise
    for item in items:
        subject = _subject(item, "subject")
        if subject in held_out:
            raise ValueError(
                f"Datalist file {path}: subject {subject!r} of the {held_out[subject]!r} split also has an image in "
                f"the training role {role!r} ({item.get('image')}); held-out people must not reach training, "
                "labelled or not."
            )
